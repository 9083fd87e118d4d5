"""Compression passes: structured pruning, low-rank factorization, BN folding, quantization."""

from workers.compress.fold import fold_batchnorm
from workers.compress.lowrank import (
    energy_rank,
    factorize_layer,
    factorize_model,
    full_rank,
    rank_for,
    tucker2_conv,
)
from workers.compress.pack import (
    pack_levels,
    packed_size,
    packed_tensors,
    unpack_levels,
    write_packed,
)
from workers.compress.prune import CRITERIA, group_width, importance, keep_count, prune_model
from workers.compress.quantize import (
    OBSERVERS,
    ActQuant,
    attach_act_quant,
    attach_fake_quant,
    bake,
    calibrate,
    fake_quant,
    qdq_weights,
    quantize_int,
    quantize_weights,
    snap_bias,
    without_act_quant,
)

__all__ = [
    "CRITERIA",
    "OBSERVERS",
    "ActQuant",
    "attach_act_quant",
    "attach_fake_quant",
    "bake",
    "calibrate",
    "energy_rank",
    "factorize_layer",
    "factorize_model",
    "fake_quant",
    "fold_batchnorm",
    "full_rank",
    "group_width",
    "importance",
    "keep_count",
    "pack_levels",
    "packed_size",
    "packed_tensors",
    "prune_model",
    "qdq_weights",
    "quantize_int",
    "quantize_weights",
    "snap_bias",
    "rank_for",
    "serialize",
    "tucker2_conv",
    "unpack_levels",
    "without_act_quant",
    "write_packed",
]
