"""Unstructured magnitude pruning: each layer's smallest weights set to zero.

Every conv / linear whose ``hw.sparsity`` is above 0 gets a :class:`WeightMask`
parametrization (weight x mask), so fine-tuning keeps the pruned weights at zero. Scope
``layer`` prunes each layer to its own sparsity; ``global`` pools the layers that ask for
sparsity and removes the same total count by one magnitude threshold over all of them (layers
with more redundancy give more). One-shot (``steps=1``) or gradual: ``steps`` rounds on the
cubic schedule of Zhu & Gupta (2017), s_t = s (1 - (1 - t / steps)^3), fine-tuning between rounds.

The zeros are stored as a bitmask plus the surviving values (:mod:`workers.compress.pack`), so
the packed size reflects them; these targets have no sparse kernels, so a sparse layer computes
as a dense one and its latency is that of the dense structure (the card says so).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn
from torch.nn.utils import parametrize

from workers.compress.quantize import parametrization_of, weight_parametrizations
from workers.models import CompressibleNet, spec_of, weight_layers

Scope = Literal["layer", "global"]
SCOPES: tuple[Scope, ...] = ("layer", "global")


class WeightMask(nn.Module):
    """Parametrization: ``weight * mask`` (the mask a buffer, 1 = kept)."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.detach().clone())

    mask: torch.Tensor

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.mask


def _sparse_layers(net: CompressibleNet) -> list[tuple[str, nn.Conv2d | nn.Linear]]:
    return [(n, m) for n, m in weight_layers(net) if spec_of(m).sparsity > 0]


def _raw(layer: nn.Module) -> torch.Tensor:
    plist = weight_parametrizations(layer)
    w = plist.original if plist is not None else layer.weight
    assert isinstance(w, torch.Tensor)
    return w.detach()


def _keep(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Mask keeping the largest ``1 - sparsity`` of ``w`` by magnitude (at least one weight)."""
    drop = min(int(round(sparsity * w.numel())), w.numel() - 1)
    if drop <= 0:
        return torch.ones_like(w)
    threshold = w.abs().flatten().kthvalue(drop).values
    return (w.abs() > threshold).to(w.dtype)


@torch.no_grad()
def set_sparsity(net: CompressibleNet, fraction: float = 1.0, scope: Scope = "layer") -> int:
    """Mask ``fraction`` of each sparse layer's target sparsity (1 = the full target), by
    magnitude; returns the number of layers masked. Attaches the masks the first time."""
    if scope not in SCOPES:
        raise ValueError(f"unknown sparsity scope {scope!r}; known: {SCOPES}")
    layers = _sparse_layers(net)
    masks: dict[str, torch.Tensor] = {}
    if scope == "layer":
        for name, layer in layers:
            masks[name] = _keep(_raw(layer), spec_of(layer).sparsity * fraction)
    elif layers:
        weights = [_raw(m) for _, m in layers]
        total = sum(w.numel() for w in weights)
        target = sum(
            spec_of(m).sparsity * w.numel() for (_, m), w in zip(layers, weights, strict=True)
        )
        drop = int(round(target * fraction))
        pooled = torch.cat([w.abs().flatten() for w in weights])
        threshold = pooled.kthvalue(max(1, min(drop, total - 1))).values if drop > 0 else -1.0
        for (name, _), w in zip(layers, weights, strict=True):
            keep = (w.abs() > threshold).to(w.dtype)
            if keep.sum() == 0:  # never empty a layer: keep its largest weight
                keep.view(-1)[w.abs().argmax()] = 1
            masks[name] = keep
    for name, layer in layers:
        existing = parametrization_of(layer, WeightMask)
        if existing is None:
            parametrize.register_parametrization(layer, "weight", WeightMask(masks[name]))
        else:
            existing.mask.copy_(masks[name])
    return len(layers)


def sparsify_model(
    net: CompressibleNet,
    steps: int = 1,
    scope: Scope = "layer",
    finetune: Callable[[CompressibleNet, int], None] | None = None,
) -> int:
    """Magnitude-prune ``net`` to each layer's ``hw.sparsity`` in ``steps`` rounds (cubic
    schedule), fine-tuning one epoch between rounds; masks stay attached (bake with
    :func:`bake_masks`). Returns the number of sparse layers."""
    if steps < 1:
        raise ValueError(f"sparsity steps must be >= 1, got {steps}")
    count = 0
    for t in range(1, steps + 1):
        count = set_sparsity(net, 1 - (1 - t / steps) ** 3, scope)
        if count == 0:
            return 0
        if finetune is not None and t < steps:
            finetune(net, 1)
    return count


def bake_masks(net: CompressibleNet) -> CompressibleNet:
    """Leave the masked values as plain weights (zeros where pruned), in place."""
    for _, layer in weight_layers(net):
        if parametrization_of(layer, WeightMask) is not None:
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
    return net


def remask(net: CompressibleNet) -> int:
    """Attach masks that keep a baked sparse layer's zeros at zero (for QAT after folding)."""
    count = 0
    for _, layer in _sparse_layers(net):
        if parametrization_of(layer, WeightMask) is None and spec_of(layer).wformat != "kmeans":
            mask = (_raw(layer) != 0).to(layer.weight.dtype)
            parametrize.register_parametrization(layer, "weight", WeightMask(mask))
            count += 1
    return count


def sparsity_of(w: torch.Tensor) -> float:
    """Fraction of exact zeros in ``w``."""
    return float((w == 0).sum()) / max(w.numel(), 1)
