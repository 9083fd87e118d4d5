"""Pack a compressed model's weights at their bit-widths; its size is what this writes.

Quantized weights are stored as integer levels packed LSB-first into bytes (2/4 bits share
bytes; 8 bits one byte each), with float32 per-channel scales; 16-bit weights as float16;
32-bit as float32; biases as float32.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from safetensors.numpy import save_file

from workers.compress.quantize import layer_bits, quantize_int
from workers.models import Net


def pack_levels(q: NDArray[np.int32], bits: int) -> NDArray[np.uint8]:
    """Pack signed integer levels (two's complement, ``bits`` wide) into a uint8 array."""
    flat = (q.reshape(-1).astype(np.int64) & ((1 << bits) - 1)).astype(np.uint8)
    if bits == 8:
        return flat
    per_byte = 8 // bits
    pad = (-len(flat)) % per_byte
    flat = np.concatenate([flat, np.zeros(pad, np.uint8)]).reshape(-1, per_byte)
    shifts = (np.arange(per_byte, dtype=np.uint8) * bits).astype(np.uint8)
    packed: NDArray[np.uint8] = np.bitwise_or.reduce(flat << shifts, axis=1).astype(np.uint8)
    return packed


def unpack_levels(packed: NDArray[np.uint8], bits: int, count: int) -> NDArray[np.int32]:
    """Inverse of :func:`pack_levels`."""
    if bits == 8:
        vals = packed.astype(np.int32)
    else:
        per_byte = 8 // bits
        shifts = (np.arange(per_byte, dtype=np.uint8) * bits).astype(np.uint8)
        vals = ((packed[:, None] >> shifts) & ((1 << bits) - 1)).reshape(-1).astype(np.int32)
    vals = vals[:count]
    return np.where(vals >= 1 << (bits - 1), vals - (1 << bits), vals).astype(np.int32)


def packed_tensors(
    net: Net, block_bits: list[int], head_bits: int
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, object]]]:
    """The arrays a deployed model needs, and per-tensor metadata (bits, shape)."""
    bits_of = layer_bits(net, block_bits, head_bits)
    names = {m: n for n, m in net.named_modules()}
    tensors: dict[str, np.ndarray] = {}
    meta: dict[str, dict[str, object]] = {}
    for layer, bits in bits_of.items():
        name = names[layer]
        w = layer.weight.detach().to(torch.float32)
        if bits >= 32:
            tensors[f"{name}.weight"] = w.numpy()
        elif bits == 16:
            tensors[f"{name}.weight"] = w.numpy().astype(np.float16)
        else:
            q, scale = quantize_int(w, bits)
            tensors[f"{name}.weight.packed"] = pack_levels(q.numpy(), bits)
            tensors[f"{name}.weight.scale"] = scale.numpy().astype(np.float32)
        if layer.bias is not None:
            tensors[f"{name}.bias"] = layer.bias.detach().to(torch.float32).numpy()
        meta[name] = {"bits": bits, "shape": list(w.shape)}
    return tensors, meta


def write_packed(path: Path, net: Net, block_bits: list[int], head_bits: int) -> int:
    """Write the packed weights to ``path`` (safetensors); return the payload bytes.

    The payload is the sum of the stored arrays' bytes; the file adds a small JSON header
    (tensor names, dtypes, shapes and the bits of each layer).
    """
    tensors, meta = packed_tensors(net, block_bits, head_bits)
    save_file(tensors, str(path), metadata={"hwnas.layers": json.dumps(meta)})
    return sum(int(a.nbytes) for a in tensors.values())


def packed_size(net: Net, block_bits: list[int], head_bits: int) -> int:
    """Payload bytes of the packed weights, computed by packing them."""
    tensors, _ = packed_tensors(net, block_bits, head_bits)
    return sum(int(a.nbytes) for a in tensors.values())
