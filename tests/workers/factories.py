"""Small candidates and networks of every family, shared by the worker tests.

Inputs are 1x12x12 images or 64 features so that a whole family sweep stays well under a second.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from search_spaces import FAMILIES, Candidate, Stage
from workers.models import ChannelGroup, Member, Net, build_model, get_module

IMAGE = (1, 12, 12)
FLAT = (64,)


def stages(family: str, **comp: Any) -> tuple[Stage, ...]:
    """Two stages per family; ``comp`` (wbits, abits, prune, rank) applies to every stage."""
    if family == "cnn":
        return (Stage(width=16, stride=2, **comp), Stage(width=32, stride=2, **comp))
    if family == "mlp":
        return (Stage(width=128, **comp), Stage(width=64, **comp))
    if family == "mbv2":
        return (
            Stage(depth=2, width=16, expand=4, stride=2, **comp),
            Stage(width=24, expand=2, stride=2, **comp),
        )
    if family == "resnet":  # stage 0 keeps the stem's stream, stage 1 starts a new one
        return (Stage(depth=2, width=8, **comp), Stage(depth=2, width=16, stride=2, **comp))
    raise ValueError(family)


def candidate(family: str, *, head_wbits: int = 32, head_abits: int = 32, **comp: Any) -> Candidate:
    assert family in FAMILIES
    return Candidate(
        space="test",
        family=family,  # type: ignore[arg-type]
        input_shape=FLAT if family == "mlp" else IMAGE,
        num_classes=10,
        stem_width=8 if family in ("mbv2", "resnet") else None,
        stages=stages(family, **comp),
        head_wbits=head_wbits,
        head_abits=head_abits,
    )


def net_of(cand: Candidate, *, bn: bool = True) -> Net:
    """The eval-mode network of ``cand``, with trained-looking BatchNorms unless ``bn`` is off."""
    net = build_model(cand).eval()
    if bn:
        randomize_bn(net, cand)
    return net


def inputs(cand: Candidate, batch: int = 4, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *cand.input_shape, generator=g)


def labels(batch: int = 4) -> torch.Tensor:
    return torch.arange(batch) % 10


@torch.no_grad()
def randomize_bn(net: nn.Module, cand: Candidate, seed: int = 2) -> None:
    """BatchNorms as after training: random affine parameters, running statistics measured on
    random inputs (so pre-activations are roughly standardised and most ReLUs fire)."""
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        n = bn.num_features
        bn.weight.copy_(torch.rand(n, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(n, generator=g) * 0.2)
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches below
    net.train()
    for s in range(2):
        net(inputs(cand, batch=64, seed=100 + s))
    for bn in bns:
        bn.momentum = 0.1
    net.eval()


def member_width(net: Net, member: Member) -> int:
    """The size of the dimension ``member`` ties to its group."""
    mod = get_module(net, member.path)
    if isinstance(mod, nn.BatchNorm2d):
        return mod.num_features
    assert isinstance(mod, nn.Conv2d | nn.Linear), member
    w = mod.weight
    return int(w.shape[1] if member.role == "in" and not _depthwise(mod) else w.shape[0])


def _depthwise(mod: nn.Module) -> bool:
    return isinstance(mod, nn.Conv2d) and mod.groups > 1


def silence(net: Net, grp: ChannelGroup, channels: torch.Tensor) -> None:
    """Make ``channels`` of ``grp`` carry exactly zero everywhere: every producer's filter (and
    bias), depthwise filter and BatchNorm (gamma, beta, mean) of those channels is zeroed."""
    with torch.no_grad():
        for m in grp.members:
            mod = get_module(net, m.path)
            if m.role == "in":
                continue
            mod.weight[channels] = 0
            if getattr(mod, "bias", None) is not None:
                mod.bias[channels] = 0
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean[channels] = 0
