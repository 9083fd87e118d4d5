"""Build the dense PyTorch model a Candidate describes.

The model is a :class:`Net`: ``blocks`` (one per hidden layer) then ``head``. Each block exposes
``layer`` (Conv2d / Linear, or an ``nn.Sequential`` of two after low-rank factorization), an
optional ``bn`` and an activation, so compression passes can rewrite layers in place.
"""

from __future__ import annotations

import torch
from torch import nn

from search_spaces import Candidate

POOLED_BLOCKS = 2  # CNN blocks followed by 2x2 max-pooling (while the map is >= 4 px)


class Block(nn.Module):
    """One hidden layer: ``layer`` (rewritten by compression), ``bn``, activation."""

    layer: nn.Module
    bn: nn.Module


class ConvBlock(Block):
    def __init__(self, cin: int, cout: int, kernel: int, pool: bool) -> None:
        super().__init__()
        self.layer: nn.Module = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(cout)
        self.act = nn.ReLU()
        self.pool: nn.Module = nn.MaxPool2d(2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.pool(self.act(self.bn(self.layer(x))))
        return out


class DenseBlock(Block):
    def __init__(self, fin: int, fout: int) -> None:
        super().__init__()
        self.layer: nn.Module = nn.Linear(fin, fout)
        self.bn: nn.Module = nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.act(self.bn(self.layer(x)))
        return out


class Net(nn.Module):
    """Blocks, then global average pooling (CNN) or nothing (MLP), then a linear head."""

    def __init__(self, family: str, blocks: list[Block], head: nn.Linear) -> None:
        super().__init__()
        self.family = family
        self.blocks = nn.ModuleList(blocks)
        self.head = head

    def block_list(self) -> list[Block]:
        return [b for b in self.blocks if isinstance(b, Block)]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.family == "mlp":
            x = x.flatten(1)
        for block in self.blocks:
            x = block(x)
        if self.family == "cnn":
            x = x.mean(dim=(2, 3))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.features(x))
        return out


def build_model(candidate: Candidate) -> Net:
    """The dense (uncompressed) network of ``candidate``, freshly initialised."""
    widths = [layer.width for layer in candidate.layers]
    blocks: list[Block] = []
    if candidate.family == "cnn":
        cin, size = candidate.input_shape[0], min(candidate.input_shape[1:])
        for i, w in enumerate(widths):
            pool = i < POOLED_BLOCKS and size >= 4
            blocks.append(ConvBlock(cin, w, candidate.kernel, pool))
            cin, size = w, size // 2 if pool else size
    else:
        fin = candidate.input_shape[0]
        for w in widths:
            blocks.append(DenseBlock(fin, w))
            fin = w
    return Net(candidate.family, blocks, nn.Linear(widths[-1], candidate.num_classes))


def conv_like(
    like: nn.Conv2d, cin: int, cout: int, *, bias: bool, kernel: int | None = None
) -> nn.Conv2d:
    """A new Conv2d with ``like``'s stride and padding (kernel 1 drops the padding)."""
    k = int(like.kernel_size[0]) if kernel is None else kernel
    pad: str | int = 0
    if kernel is None:
        pad = like.padding if isinstance(like.padding, str) else int(like.padding[0])
    return nn.Conv2d(cin, cout, k, int(like.stride[0]), pad, bias=bias)


def example_input(candidate: Candidate, batch: int = 1) -> torch.Tensor:
    return torch.zeros(batch, *candidate.input_shape)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
