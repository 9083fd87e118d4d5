"""Pack a compressed model's weights at their bit-widths; its size is what this writes.

Quantized weights are stored as integer levels packed LSB-first into bytes (2/4 bits share
bytes; 8 bits one byte each), with float32 per-channel scales; 16-bit weights as float16;
32-bit as float32; biases as float32; each activation quantizer adds its scale (float32) and
zero point (int32). A candidate's size is the byte count of that serialized file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from workers.compress.quantize import ActQuant, quantize_int
from workers.models import Net, spec_of, weight_layers


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


def packed_tensors(net: Net) -> tuple[dict[str, np.ndarray], dict[str, dict[str, object]]]:
    """The arrays a deployed model needs, and per-layer metadata (bits, shape)."""
    tensors: dict[str, np.ndarray] = {}
    meta: dict[str, dict[str, object]] = {}
    for name, layer in weight_layers(net):
        bits = spec_of(layer).wbits
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
        meta[name] = {"bits": bits, "abits": spec_of(layer).abits, "shape": list(w.shape)}
    for name, m in net.named_modules():
        if isinstance(m, ActQuant) and m.ready:
            tensors[f"{name}.scale"] = np.asarray([m.scale], np.float32)
            tensors[f"{name}.zero_point"] = np.asarray([m.zero_point], np.int32)
    return tensors, meta


def serialize(net: Net) -> bytes:
    """The packed weights as safetensors bytes (arrays + a compact header: names, dtypes,
    shapes, and each layer's bits)."""
    from safetensors.numpy import save

    tensors, meta = packed_tensors(net)
    bits = {name: [m["bits"], m["abits"]] for name, m in meta.items()}
    return save(tensors, metadata={"hwnas.bits": json.dumps(bits, separators=(",", ":"))})


def write_packed(path: Path, net: Net) -> int:
    """Write the packed weights to ``path``; return the file's size in bytes (the size a
    candidate reports: weights + scales + header, measured, not estimated)."""
    blob = serialize(net)
    path.write_bytes(blob)
    return path.stat().st_size


def packed_size(net: Net) -> int:
    """Bytes of the serialized packed weights (what :func:`write_packed` would write)."""
    return len(serialize(net))
