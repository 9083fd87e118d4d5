"""Compression passes: structured pruning, BN folding, low-rank factorization, quantization."""

from workers.compress.fold import fold_batchnorm
from workers.compress.lowrank import factorize_layer, factorize_model, full_rank, rank_for
from workers.compress.pack import (
    pack_levels,
    packed_size,
    packed_tensors,
    unpack_levels,
    write_packed,
)
from workers.compress.prune import keep_count, l1_importance, prune_model
from workers.compress.quantize import attach_fake_quant, bake, fake_quant, quantize_int

__all__ = [
    "attach_fake_quant",
    "bake",
    "factorize_layer",
    "factorize_model",
    "fake_quant",
    "fold_batchnorm",
    "full_rank",
    "keep_count",
    "l1_importance",
    "pack_levels",
    "packed_size",
    "packed_tensors",
    "prune_model",
    "quantize_int",
    "rank_for",
    "unpack_levels",
    "write_packed",
]
