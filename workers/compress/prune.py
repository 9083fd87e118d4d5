"""Structured channel pruning that physically removes output channels and resizes consumers."""

from __future__ import annotations

import torch
from torch import nn

from workers.models import Net, conv_like


def keep_count(width: int, ratio: float) -> int:
    """Channels kept when pruning ``ratio`` of ``width`` (never below one)."""
    return max(1, width - round(ratio * width))


def l1_importance(layer: nn.Module) -> torch.Tensor:
    """L1 norm of each output channel's weights."""
    w = _weight(layer)
    return w.detach().abs().flatten(1).sum(dim=1)


def prune_model(net: Net, ratios: list[float]) -> Net:
    """Remove ``ratios[i]`` of block i's output channels (lowest L1 norm first), in place.

    The next block's layer (or the head) loses the matching input channels; BatchNorm
    statistics are sliced with their channels. Works on dense (not yet factorized) layers.
    """
    if len(ratios) != len(net.blocks):
        raise ValueError(f"{len(ratios)} prune ratios for {len(net.blocks)} blocks")
    blocks = net.block_list()
    for i, (block, ratio) in enumerate(zip(blocks, ratios, strict=True)):
        if ratio <= 0:
            continue
        width = _weight(block.layer).shape[0]
        keep = torch.argsort(l1_importance(block.layer), descending=True)[
            : keep_count(width, ratio)
        ]
        keep = torch.sort(keep).values
        block.layer = _slice_out(block.layer, keep)
        if isinstance(block.bn, nn.BatchNorm2d | nn.BatchNorm1d):
            block.bn = _slice_bn(block.bn, keep)
        consumer = blocks[i + 1].layer if i + 1 < len(blocks) else net.head
        sliced = _slice_in(consumer, keep)
        if i + 1 < len(blocks):
            blocks[i + 1].layer = sliced
        else:
            assert isinstance(sliced, nn.Linear)
            net.head = sliced
    return net


def _weight(layer: nn.Module) -> torch.Tensor:
    w = getattr(layer, "weight", None)
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"cannot prune {type(layer).__name__}: prune before factorizing")
    return w


def _slice_out(layer: nn.Module, keep: torch.Tensor) -> nn.Module:
    w = _weight(layer).detach()
    bias = getattr(layer, "bias", None)
    new: nn.Module
    if isinstance(layer, nn.Conv2d):
        new = conv_like(layer, layer.in_channels, len(keep), bias=bias is not None)
    elif isinstance(layer, nn.Linear):
        new = nn.Linear(layer.in_features, len(keep), bias=bias is not None)
    else:
        raise TypeError(f"cannot prune {type(layer).__name__}")
    new.train(layer.training)  # the replacement keeps the net's mode
    with torch.no_grad():
        new.weight.copy_(w[keep])
        if bias is not None and new.bias is not None:
            new.bias.copy_(bias.detach()[keep])
    return new


def _slice_in(layer: nn.Module, keep: torch.Tensor) -> nn.Module:
    w = _weight(layer).detach()
    bias = getattr(layer, "bias", None)
    new: nn.Module
    if isinstance(layer, nn.Conv2d):
        new = conv_like(layer, len(keep), layer.out_channels, bias=bias is not None)
    elif isinstance(layer, nn.Linear):
        new = nn.Linear(len(keep), layer.out_features, bias=bias is not None)
    else:
        raise TypeError(f"cannot resize {type(layer).__name__}")
    new.train(layer.training)
    with torch.no_grad():
        new.weight.copy_(w[:, keep])
        if bias is not None and new.bias is not None:
            new.bias.copy_(bias.detach())
    return new


def _slice_bn(bn: nn.BatchNorm2d | nn.BatchNorm1d, keep: torch.Tensor) -> nn.Module:
    new = type(bn)(len(keep), eps=bn.eps, momentum=bn.momentum).train(bn.training)
    assert bn.weight is not None and bn.bias is not None
    assert new.weight is not None and new.bias is not None
    with torch.no_grad():
        new.weight.copy_(bn.weight[keep])
        new.bias.copy_(bn.bias[keep])
        assert bn.running_mean is not None and bn.running_var is not None
        assert new.running_mean is not None and new.running_var is not None
        new.running_mean.copy_(bn.running_mean[keep])
        new.running_var.copy_(bn.running_var[keep])
    return new
