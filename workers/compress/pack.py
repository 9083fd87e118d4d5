"""Pack a compressed model's weights at their bit-widths; its size is what this writes.

Integer-coded weights (int, ternary, binary) are stored as their levels packed LSB-first into
bytes at ``wbits`` bits each (two's complement; binary as one bit, 1 = +1), with float32
per-channel scales; k-means weights as ``wbits``-bit indices plus the layer's float32 codebook;
16-bit weights as float16; 32-bit as float32. A sparse layer (``hw.sparsity`` > 0) stores a
bitmask of its non-zero weights (one bit each) and only those weights' values or indices.
Biases are float32; each activation quantizer adds its scale (float32) and zero point (int32).
A candidate's size is the byte count of that serialized file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from search_spaces import default_format
from workers.compress.cluster import codebook_of
from workers.compress.codes import weight_levels
from workers.compress.quantize import ActQuant
from workers.models import CompressibleNet, LayerSpec, spec_of, weight_layers


def pack_levels(q: NDArray[np.int32], bits: int) -> NDArray[np.uint8]:
    """Pack signed integer levels (two's complement, ``bits`` wide, 1..8) into a uint8 array,
    LSB-first (value i starts at bit ``i * bits``)."""
    flat = (q.reshape(-1).astype(np.int64) & ((1 << bits) - 1)).astype(np.uint8)
    if bits == 8:
        return flat
    planes = (flat[:, None] >> np.arange(bits, dtype=np.uint8)) & 1
    packed: NDArray[np.uint8] = np.packbits(planes.reshape(-1), bitorder="little")
    return packed


def unpack_levels(
    packed: NDArray[np.uint8], bits: int, count: int, signed: bool = True
) -> NDArray[np.int32]:
    """Inverse of :func:`pack_levels` (``signed=False`` for k-means indices and binary bits)."""
    if bits == 8:
        vals = packed.astype(np.int32)[:count]
    else:
        planes = np.unpackbits(packed, bitorder="little")[: count * bits].reshape(count, bits)
        vals = (planes.astype(np.int32) << np.arange(bits, dtype=np.int32)).sum(axis=1)
    if not signed:
        return vals.astype(np.int32)
    return np.where(vals >= 1 << (bits - 1), vals - (1 << bits), vals).astype(np.int32)


def _layer_tensors(name: str, w: torch.Tensor, spec: LayerSpec) -> dict[str, np.ndarray]:
    """The arrays that store one layer's weight in its format (and sparsity)."""
    out: dict[str, np.ndarray] = {}
    arr = w.numpy()
    keep = arr.reshape(-1) != 0
    sparse = spec.sparsity > 0
    if sparse:
        out[f"{name}.weight.mask"] = np.packbits(keep, bitorder="little")
    if spec.wformat == "float":
        vals = arr.reshape(-1)[keep] if sparse else arr
        out[f"{name}.weight"] = vals.astype(np.float16 if spec.wbits == 16 else np.float32)
    elif spec.wformat == "kmeans":
        book, index = codebook_of(arr, spec.wbits, sparse)
        out[f"{name}.weight.codebook"] = book
        out[f"{name}.weight.index"] = pack_levels(index, spec.wbits)
    else:
        q, scale = weight_levels(w, spec)
        levels = q.numpy().reshape(-1)
        if spec.wformat == "binary":
            levels = (levels > 0).astype(np.int32)  # one bit: 1 = +1, 0 = -1
        out[f"{name}.weight.packed"] = pack_levels(levels[keep] if sparse else levels, spec.wbits)
        out[f"{name}.weight.scale"] = scale.numpy().astype(np.float32)
    return out


def packed_tensors(
    net: CompressibleNet,
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, object]]]:
    """The arrays a deployed model needs, and per-layer metadata (format, bits, shape)."""
    tensors: dict[str, np.ndarray] = {}
    meta: dict[str, dict[str, object]] = {}
    for name, layer in weight_layers(net):
        spec = spec_of(layer)
        w = layer.weight.detach().to(torch.float32)
        tensors |= _layer_tensors(name, w, spec)
        if layer.bias is not None:
            tensors[f"{name}.bias"] = layer.bias.detach().to(torch.float32).numpy()
        meta[name] = {
            "bits": spec.wbits,
            "format": spec.wformat,
            "abits": spec.abits,
            "sparse": spec.sparsity > 0,
            "shape": list(w.shape),
        }
    for name, m in net.named_modules():
        if isinstance(m, ActQuant) and m.ready:
            tensors[f"{name}.scale"] = np.asarray([m.scale], np.float32)
            tensors[f"{name}.zero_point"] = np.asarray([m.zero_point], np.int32)
    return tensors, meta


def serialize(net: CompressibleNet) -> bytes:
    """The packed weights as safetensors bytes (arrays + a compact header: names, dtypes,
    shapes, and each layer's bits: ``[wbits, abits]``, plus its format where that is not the
    one ``wbits`` implies, and ``"sparse"`` for a masked layer)."""
    from safetensors.numpy import save

    tensors, meta = packed_tensors(net)
    bits = {}
    for name, m in meta.items():
        row: list[object] = [m["bits"], m["abits"]]
        if m["format"] != default_format(int(m["bits"])):  # type: ignore[call-overload]
            row.append(m["format"])
        if m["sparse"]:
            row.append("sparse")
        bits[name] = row
    return save(tensors, metadata={"hwnas.bits": json.dumps(bits, separators=(",", ":"))})


def write_packed(path: Path, net: CompressibleNet) -> int:
    """Write the packed weights to ``path``; return the file's size in bytes (the size a
    candidate reports: weights + scales + header, measured, not estimated)."""
    blob = serialize(net)
    path.write_bytes(blob)
    return path.stat().st_size


def packed_size(net: CompressibleNet) -> int:
    """Bytes of the serialized packed weights (what :func:`write_packed` would write)."""
    return len(serialize(net))
