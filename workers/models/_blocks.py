"""Building blocks. Attribute names are the module paths compression passes refer to."""

from __future__ import annotations

import torch
from torch import nn

from workers.models._spec import ChannelGroup, LayerSpec


class ConvBNAct(nn.Module):
    def __init__(
        self,
        cin: int,
        cout: int,
        k: int,
        stride: int = 1,
        groups: int = 1,
        act: str | None = "relu",
    ) -> None:
        super().__init__()
        self.conv: nn.Module = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(cout)
        self.act: nn.Module = {"relu": nn.ReLU(), "relu6": nn.ReLU6(), None: nn.Identity()}[act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.act(self.bn(self.conv(x)))
        return out


class DenseBlock(nn.Module):
    def __init__(self, fin: int, fout: int) -> None:
        super().__init__()
        self.fc: nn.Module = nn.Linear(fin, fout)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.act(self.fc(x))
        return out


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> k x k depthwise -> 1x1 project (+ identity)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.expand: nn.Module = (
            ConvBNAct(cin, hidden, 1, act="relu6") if expand > 1 else nn.Identity()
        )
        self.dw = ConvBNAct(hidden, hidden, k, stride, groups=hidden, act="relu6")
        self.project = ConvBNAct(hidden, cout, 1, act=None)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.project(self.dw(self.expand(x)))
        return x + out if self.residual else out


class BasicBlock(nn.Module):
    """ResNet basic block: two k x k convs, identity or 1x1 projection shortcut."""

    def __init__(self, cin: int, cout: int, k: int, stride: int) -> None:
        super().__init__()
        self.c1 = ConvBNAct(cin, cout, k, stride)
        self.c2 = ConvBNAct(cout, cout, k, act=None)
        needs_proj = stride != 1 or cin != cout
        self.down: nn.Module = (
            ConvBNAct(cin, cout, 1, stride, act=None) if needs_proj else nn.Identity()
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.act(self.c2(self.c1(x)) + self.down(x))
        return out


class CompressibleNet(nn.Module):
    """What the compression passes read off a network: its channel groups (hwnas's own
    structured pruning; a network may prune itself instead with a ``prune_channels`` method),
    its (conv, BatchNorm) pairs by module path, and ``hw`` on every conv / linear."""

    groups: list[ChannelGroup]
    conv_bn: list[tuple[str, str]]


class Net(CompressibleNet):
    """stem -> stages -> (global average pool) -> head, plus what compression needs to know."""

    def __init__(self, family: str, stem: nn.Module, stages: list[nn.Sequential], head: nn.Linear):
        super().__init__()
        self.family = family
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.head = head
        self.groups: list[ChannelGroup] = []
        self.conv_bn: list[tuple[str, str]] = []

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.family == "mlp":
            x = x.flatten(1)
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        if self.family != "mlp":
            x = x.mean(dim=(2, 3))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.features(x))
        return out


def annotate(module: nn.Module, spec: LayerSpec) -> None:
    """Set ``hw`` on every Conv2d / Linear under ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            m.hw = spec  # type: ignore[assignment]
