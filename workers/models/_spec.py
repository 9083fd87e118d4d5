"""What the builder records on a network so compression passes need no candidate.

Every Conv2d / Linear carries ``hw`` (a :class:`LayerSpec`: its bits and rank); the network
carries its prunable :class:`ChannelGroup` list and its (conv, BatchNorm) pairs, by module path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from search_spaces import INT_CODED, default_format

Role = Literal["out", "in", "channelwise"]


@dataclass(frozen=True)
class LayerSpec:
    """A layer's compression: weight bits and format, activation bits, rank, sparsity.

    ``wformat`` "" is inferred from ``wbits`` as a candidate infers it (float at 16 / 32,
    binary at 1, int otherwise).
    """

    wbits: int = 32
    abits: int = 32
    rank: float = 1.0
    wformat: str = ""
    sparsity: float = 0.0

    def __post_init__(self) -> None:
        if not self.wformat:
            object.__setattr__(self, "wformat", default_format(self.wbits))

    @property
    def int_coded(self) -> bool:
        """Integer levels x a per-channel scale (int, ternary, binary): fits int8 kernels."""
        return self.wformat in INT_CODED

    @property
    def compute_wbits(self) -> int:
        """Bits of the weights as they compute: codebook (k-means) layers compute as float32
        weights, integer-coded ones as their levels, float ones as stored."""
        return 32 if self.wformat == "kmeans" else self.wbits


@dataclass(frozen=True)
class Member:
    """One tensor dimension tied to a channel group.

    ``out``: output channels of a conv/linear (a producer); ``in``: input channels of a
    conv/linear (a consumer); ``channelwise``: BatchNorm or depthwise conv (both).
    """

    path: str
    role: Role


@dataclass
class ChannelGroup:
    """Channels that must be pruned together (a layer's outputs and everything reading them,
    or a whole residual stream)."""

    name: str
    ratio: float
    members: list[Member] = field(default_factory=list)

    def add(self, path: str, role: Role) -> None:
        self.members.append(Member(path, role))


def get_module(root: nn.Module, path: str) -> nn.Module:
    return root.get_submodule(path)


def set_module(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, new)


def spec_of(module: nn.Module) -> LayerSpec:
    spec = getattr(module, "hw", None)
    return spec if isinstance(spec, LayerSpec) else LayerSpec()


def weight_layers(root: nn.Module) -> list[tuple[str, nn.Conv2d | nn.Linear]]:
    return [(n, m) for n, m in root.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def conv_like(
    like: nn.Conv2d, cin: int, cout: int, *, bias: bool, groups: int = 1, pointwise: bool = False
) -> nn.Conv2d:
    """A new Conv2d with ``like``'s kernel, stride and padding (``pointwise``: a 1x1 conv)."""
    if pointwise:
        return nn.Conv2d(cin, cout, 1, bias=bias)
    k = (int(like.kernel_size[0]), int(like.kernel_size[1]))
    s = (int(like.stride[0]), int(like.stride[1]))
    pad: str | tuple[int, int] = (
        like.padding
        if isinstance(like.padding, str)
        else (int(like.padding[0]), int(like.padding[1]))
    )
    return nn.Conv2d(cin, cout, k, s, pad, groups=groups, bias=bias)
