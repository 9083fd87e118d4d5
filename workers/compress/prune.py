"""Structured pruning over channel groups: channels are physically removed everywhere they live.

A :class:`~workers.models.ChannelGroup` lists every tensor dimension tied to one set of
channels (producers, BatchNorms, depthwise convs, consumers, whole residual streams), so removing
channel ``c`` from a group keeps the network consistent by construction.

Criteria: ``l1`` (L1 norm of producer filters), ``bn_gamma`` (|gamma| of the group's
BatchNorms; L1 where a group has none), ``taylor`` (first-order Taylor |w * dL/dw| summed per
channel over a few batches). One-shot, or iterative: ``steps`` prune-finetune rounds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from workers.compress.rounding import round_channels
from workers.models import ChannelGroup, CompressibleNet, conv_like, get_module, set_module

Criterion = Literal["l1", "bn_gamma", "taylor"]
CRITERIA: tuple[Criterion, ...] = ("l1", "bn_gamma", "taylor")


def keep_count(width: int, ratio: float) -> int:
    """Channels kept when pruning ``ratio`` of ``width``: never below one, on a multiple of
    :data:`~workers.compress.rounding.CHANNEL_MULTIPLE` (ratio 0 keeps every channel)."""
    if ratio <= 0:
        return width
    return round_channels(max(1, width - round(ratio * width)), width)


def group_width(net: CompressibleNet, group: ChannelGroup) -> int:
    for m in group.members:
        mod = get_module(net, m.path)
        if isinstance(mod, nn.Sequential):
            raise TypeError(f"{m.path} is factorized: prune before factorizing")
        if m.role == "out" or m.role == "channelwise":
            w = getattr(mod, "weight", None)
            if isinstance(w, torch.Tensor):
                return int(w.shape[0])
    raise ValueError(f"group {group.name} has no producer")


def _normalised(x: torch.Tensor) -> torch.Tensor:
    return x / x.mean().clamp_min(1e-12)


def importance(
    net: CompressibleNet,
    group: ChannelGroup,
    criterion: Criterion,
    grads: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """One score per channel of ``group`` (higher = keep). Each member's scores are normalised
    to mean 1 before summing, so layers of different scale count alike."""
    scores: list[torch.Tensor] = []
    for m in group.members:
        mod = get_module(net, m.path)
        w = getattr(mod, "weight", None)
        if not isinstance(w, torch.Tensor) or m.role == "in":
            continue
        is_bn = isinstance(mod, nn.BatchNorm2d | nn.BatchNorm1d)
        if criterion == "bn_gamma" and is_bn:
            scores.append(_normalised(w.detach().abs()))
        elif criterion == "l1" and not is_bn:
            scores.append(_normalised(w.detach().abs().flatten(1).sum(1)))
        elif criterion == "taylor":
            if grads is None or m.path not in grads:
                raise ValueError("taylor pruning needs gradients: pass batches to prune_model")
            g = grads[m.path]
            per = (w.detach() * g).flatten(1).sum(1) if w.dim() > 1 else w.detach() * g
            scores.append(_normalised(per.abs()))
    if not scores:
        if criterion == "bn_gamma":
            return importance(net, group, "l1")
        raise ValueError(f"group {group.name}: no producer to score")
    return torch.stack(scores).sum(0)


def taylor_grads(
    net: CompressibleNet, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Accumulated dL/dw of every parameterised module, over ``batches`` (eval-mode BN)."""
    net.eval()
    net.zero_grad(set_to_none=True)
    for x, y in batches:
        F.cross_entropy(net(x), y).backward()
    grads = {
        name: mod.weight.grad.detach().clone()
        for name, mod in net.named_modules()
        if isinstance(getattr(mod, "weight", None), torch.Tensor) and mod.weight.grad is not None
    }
    net.zero_grad(set_to_none=True)
    return grads


def prune_group(net: CompressibleNet, group: ChannelGroup, keep: torch.Tensor) -> None:
    """Keep only channels ``keep`` (sorted indices) of ``group`` in every member, in place."""
    for m in group.members:
        old = get_module(net, m.path)
        new = _slice(old, keep, m.role)
        new.train(old.training)
        if hasattr(old, "hw"):
            new.hw = old.hw
        set_module(net, m.path, new)


def prune_model(
    net: CompressibleNet,
    criterion: Criterion = "l1",
    *,
    steps: int = 1,
    batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]] | None = None,
    finetune: Callable[[CompressibleNet], None] | None = None,
) -> CompressibleNet:
    """Prune every group of ``net`` to its ``ratio``, in place.

    Args:
        criterion: how channels are ranked.
        steps: 1 = one-shot; k > 1 = k rounds reaching ``ratio * i / k`` of the original width,
            with ``finetune(net)`` after each round but the last.
        batches: a fresh iterable of (x, y) batches for the Taylor criterion.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown prune criterion {criterion!r}; known: {CRITERIA}")
    own = getattr(net, "prune_channels", None)
    if callable(own):  # an uploaded network: torch-pruning's dependency graph (workers.networks)
        own(criterion, steps=steps, batches=batches, finetune=finetune)
        return net
    widths = {g.name: group_width(net, g) for g in net.groups}
    for step in range(1, steps + 1):
        grads = None
        if criterion == "taylor":
            if batches is None:
                raise ValueError("taylor pruning needs batches")
            grads = taylor_grads(net, batches())
        plan = []  # score every group before slicing any: slicing changes shared tensors
        for g in net.groups:
            target = keep_count(widths[g.name], g.ratio * step / steps)
            if target < group_width(net, g):
                scores = importance(net, g, criterion, grads)
                plan.append((g, torch.sort(torch.argsort(scores, descending=True)[:target]).values))
        for g, keep in plan:
            prune_group(net, g, keep)
        if finetune is not None and step < steps:
            finetune(net)
    return net


def _slice(layer: nn.Module, keep: torch.Tensor, role: str) -> nn.Module:
    n = len(keep)
    if isinstance(layer, nn.BatchNorm2d | nn.BatchNorm1d):
        bn = type(layer)(n, eps=layer.eps, momentum=layer.momentum)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                src, dst = getattr(layer, name), getattr(bn, name)
                if src is not None and dst is not None:
                    dst.copy_(src[keep])
        return bn
    if isinstance(layer, nn.Conv2d):
        w = layer.weight.detach()
        depthwise = layer.groups > 1
        if depthwise and not (layer.groups == layer.in_channels == layer.out_channels):
            raise TypeError("only depthwise grouped convs can be pruned")
        cin = n if role == "in" or depthwise else layer.in_channels
        cout = n if role == "out" or depthwise else layer.out_channels
        conv = conv_like(
            layer, cin, cout, groups=n if depthwise else 1, bias=layer.bias is not None
        )
        with torch.no_grad():
            conv.weight.copy_(w[:, keep] if role == "in" else w[keep])
            if layer.bias is not None and conv.bias is not None:
                conv.bias.copy_(layer.bias if role == "in" else layer.bias[keep])
        return conv
    if isinstance(layer, nn.Linear):
        w = layer.weight.detach()
        fin = n if role == "in" else layer.in_features
        fout = n if role == "out" else layer.out_features
        lin = nn.Linear(fin, fout, bias=layer.bias is not None)
        with torch.no_grad():
            lin.weight.copy_(w[:, keep] if role == "in" else w[keep])
            if layer.bias is not None and lin.bias is not None:
                lin.bias.copy_(layer.bias if role == "in" else layer.bias[keep])
        return lin
    raise TypeError(f"cannot prune {type(layer).__name__} (prune before factorizing)")
