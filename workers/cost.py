"""Compute of a (compressed) network: multiply-accumulates and BitOps, counted on one forward.

``macs`` counts the multiply-accumulates of every conv and linear layer for one input sample;
``bitops`` weights each layer's MACs by its deployed weight x activation bit-widths (the usual
BitOps of mixed-precision search: an 8x8-bit MAC is 64 BitOps, a float MAC 32 x 32; k-means
layers compute as float32 weights; sparse layers count dense, as they compute here).
"""

from __future__ import annotations

import torch
from torch import nn

from workers.models import spec_of, weight_layers


def compute_cost(net: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """``{"macs", "bitops"}`` of ``net`` for one sample shaped like ``example`` (batch 1)."""
    counts: dict[str, int] = {"macs": 0, "bitops": 0}

    def hook(layer: nn.Module, _inputs: object, out: torch.Tensor) -> None:
        if isinstance(layer, nn.Conv2d):
            per_output = (layer.in_channels // layer.groups) * _prod(layer.kernel_size)
            macs = per_output * out[0].numel()
        else:
            assert isinstance(layer, nn.Linear)
            macs = layer.in_features * layer.out_features
        spec = spec_of(layer)
        counts["macs"] += macs
        counts["bitops"] += macs * spec.compute_wbits * spec.abits

    handles = [m.register_forward_hook(hook) for _, m in weight_layers(net)]
    try:
        with torch.no_grad():
            net(example[:1])
    finally:
        for h in handles:
            h.remove()
    return counts


def _prod(xs: tuple[int, ...] | int) -> int:
    if isinstance(xs, int):
        return xs
    out = 1
    for x in xs:
        out *= int(x)
    return out
