"""Low-rank factorization by truncated SVD: one layer becomes two smaller ones."""

from __future__ import annotations

import torch
from torch import nn

from workers.models import Net, conv_like


def full_rank(layer: nn.Conv2d | nn.Linear) -> int:
    w = layer.weight
    return min(w.shape[0], w[0].numel())


def rank_for(layer: nn.Conv2d | nn.Linear, fraction: float) -> int:
    return max(1, round(fraction * full_rank(layer)))


def factorize_layer(layer: nn.Module, rank: int) -> nn.Sequential:
    """Truncated SVD of ``layer``'s weight, reshaped to (out, fan_in).

    Linear -> Linear(in, r, no bias) + Linear(r, out). A k x k conv -> conv k x k (in -> r, no
    bias) + conv 1 x 1 (r -> out): exact at full rank, and for 1 x 1 convs the plain SVD split.
    The singular values are split evenly (sqrt) between the factors.
    """
    if not isinstance(layer, nn.Conv2d | nn.Linear):
        raise TypeError(f"cannot factorize {type(layer).__name__}")
    w = layer.weight.detach()
    out = w.shape[0]
    u, s, vh = torch.linalg.svd(w.reshape(out, -1), full_matrices=False)
    r = min(rank, s.numel())
    root = torch.sqrt(s[:r])
    first_w, second_w = root[:, None] * vh[:r], u[:, :r] * root[None, :]
    bias = layer.bias.detach() if layer.bias is not None else None
    first: nn.Module
    second: nn.Module
    if isinstance(layer, nn.Linear):
        first = nn.Linear(layer.in_features, r, bias=False)
        second = nn.Linear(r, out, bias=bias is not None)
        shaped = first_w
    else:
        first = conv_like(layer, layer.in_channels, r, bias=False)
        second = conv_like(layer, r, out, bias=bias is not None, kernel=1)
        shaped = first_w.reshape(r, *w.shape[1:])
        second_w = second_w[:, :, None, None]
    with torch.no_grad():
        first.weight.copy_(shaped)
        second.weight.copy_(second_w)
        if bias is not None:
            assert isinstance(second.bias, torch.Tensor)
            second.bias.copy_(bias)
    return nn.Sequential(first, second)


def factorize_model(net: Net, fractions: list[float]) -> Net:
    """Factorize block i at ``fractions[i]`` of full rank, in place.

    A layer is only split when that saves parameters (r * (out + fan_in) < out * fan_in);
    otherwise it stays dense, and a fraction of 1.0 always keeps it dense.
    """
    if len(fractions) != len(net.blocks):
        raise ValueError(f"{len(fractions)} rank fractions for {len(net.blocks)} blocks")
    for block, frac in zip(net.block_list(), fractions, strict=True):
        layer = block.layer
        if frac >= 1.0 or not isinstance(layer, nn.Conv2d | nn.Linear):
            continue
        r = rank_for(layer, frac)
        out, fan_in = layer.weight.shape[0], layer.weight[0].numel()
        if r * (out + fan_in) < out * fan_in:
            block.layer = factorize_layer(layer, r)
    return net
