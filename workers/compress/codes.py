"""Integer weight codes: a layer's weights as integer levels times a per-output-channel scale.

One function, :func:`weight_levels`, says what every integer-coded format means, and everything
that stores or lowers such weights (QAT, the packed file, the ONNX QDQ pairs, the TVM int8
lowering, the bias snap) calls it, so they agree by construction:

- ``int`` at 4 / 8 bits: symmetric levels [-qmax, qmax], qmax = 2^(b-1) - 1, scale amax / qmax
  (or the MSE-best clip with ``observer="mse"``);
- ``int`` at 2 bits: the 4 two's-complement levels {-2, -1, 0, 1}, scale max(-min / 2, max)
  per channel, so both extremes are reachable;
- ``ternary``: {-1, 0, 1} with the TWN threshold 0.7 * mean |w| and scale the mean |w| above it
  (Li & Liu 2016);
- ``binary``: {-1, 1} (sign, 0 -> +1) with scale mean |w| (XNOR-CompressibleNet, per channel).

Every code is idempotent on its own output: re-coding baked weights gives back the same
values, which is what lets the packed file, the exports and the probe re-derive levels from the
plain weight tensor.
"""

from __future__ import annotations

import torch

from workers.models import LayerSpec

TERNARY_THRESHOLD = 0.7


def qmax(bits: int) -> int:
    return int(2 ** (bits - 1) - 1)


def level_range(spec: LayerSpec) -> tuple[int, int]:
    """The smallest and largest integer level of ``spec``'s code."""
    if spec.wformat in ("ternary", "binary"):
        return -1, 1
    if spec.wformat == "int" and spec.wbits == 2:
        return -2, 1
    if spec.wformat == "int":
        return -qmax(spec.wbits), qmax(spec.wbits)
    raise ValueError(f"{spec.wformat} weights are not integer-coded")


def weight_levels(
    w: torch.Tensor, spec: LayerSpec, observer: str = "minmax"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer levels (int32) and per-output-channel float scales of ``w`` in ``spec``'s code."""
    flat = w.detach().flatten(1)
    shape = (-1,) + (1,) * (w.dim() - 1)
    if spec.wformat == "binary":  # means in float64: exact again on baked {-a, a} weights
        scale = flat.double().abs().mean(dim=1).to(w.dtype).clamp_min(1e-12)
        q = torch.where(w >= 0, 1, -1)
        return q.to(torch.int32), scale
    if spec.wformat == "ternary":
        mag = flat.double().abs()
        keep = mag > TERNARY_THRESHOLD * mag.mean(dim=1, keepdim=True)
        count = keep.sum(dim=1).clamp_min(1)
        scale = ((mag * keep).sum(dim=1) / count).to(w.dtype).clamp_min(1e-12)
        q = torch.sign(flat) * keep
        return q.view_as(w).to(torch.int32), scale
    if spec.wformat == "int" and spec.wbits == 2:
        scale = torch.maximum(-flat.amin(dim=1) / 2, flat.amax(dim=1)).clamp_min(1e-12)
        q = torch.clamp(torch.round(w / scale.view(shape)), -2, 1)
        return q.to(torch.int32), scale
    if spec.wformat == "int":
        scale = channel_scales(w, spec.wbits, observer)
        top = qmax(spec.wbits)
        q = torch.clamp(torch.round(w / scale.view(shape)), -top, top)
        return q.to(torch.int32), scale
    raise ValueError(f"{spec.wformat} weights are not integer-coded")


def channel_scales(w: torch.Tensor, bits: int, observer: str = "minmax") -> torch.Tensor:
    """Per-output-channel scale of symmetric ``bits``-bit levels; ``mse`` searches the clip
    ratio that minimises the error."""
    amax = w.detach().abs().flatten(1).amax(dim=1).clamp_min(1e-12)
    if observer != "mse":
        return amax / qmax(bits)
    best, best_err = amax / qmax(bits), None
    flat = w.detach().flatten(1)
    for ratio in torch.linspace(1.0, 0.3, 15):
        s = (amax * ratio / qmax(bits))[:, None]
        err = ((torch.clamp(torch.round(flat / s), -qmax(bits), qmax(bits)) * s - flat) ** 2).sum(1)
        if best_err is None:
            best_err = err
        better = err < best_err
        best = torch.where(better, s[:, 0], best)
        best_err = torch.minimum(err, best_err)
    return best


def coded(w: torch.Tensor, spec: LayerSpec, observer: str = "minmax") -> torch.Tensor:
    """What ``w`` computes as in ``spec``'s format (float16 rounding at 16 bits, levels x scale
    for integer codes, ``w`` itself at 32 bits; k-means layers need their codebook: see
    :mod:`workers.compress.cluster`)."""
    if spec.wformat == "float":
        return w if spec.wbits >= 32 else w.to(torch.float16).to(w.dtype)
    if spec.wformat == "kmeans":
        raise ValueError("k-means weights are coded by their codebook (cluster.attach_clusters)")
    q, scale = weight_levels(w, spec, observer)
    return q.to(w.dtype) * scale.view((-1,) + (1,) * (w.dim() - 1)).to(w.dtype)
