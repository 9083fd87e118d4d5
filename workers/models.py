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


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, pool: bool) -> None:
        super().__init__()
        self.layer: nn.Module = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(cout)
        self.act = nn.ReLU()
        self.pool: nn.Module = nn.MaxPool2d(2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.bn(self.layer(x))))


class DenseBlock(nn.Module):
    def __init__(self, fin: int, fout: int) -> None:
        super().__init__()
        self.layer: nn.Module = nn.Linear(fin, fout)
        self.bn: nn.Module = nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.layer(x)))


class Net(nn.Module):
    """Blocks, then global average pooling (CNN) or nothing (MLP), then a linear head."""

    def __init__(self, family: str, blocks: list[nn.Module], head: nn.Linear) -> None:
        super().__init__()
        self.family = family
        self.blocks = nn.ModuleList(blocks)
        self.head = head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.family == "mlp":
            x = x.flatten(1)
        for block in self.blocks:
            x = block(x)
        if self.family == "cnn":
            x = x.mean(dim=(2, 3))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_model(candidate: Candidate) -> Net:
    """The dense (uncompressed) network of ``candidate``, freshly initialised."""
    widths = [layer.width for layer in candidate.layers]
    blocks: list[nn.Module] = []
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


def example_input(candidate: Candidate, batch: int = 1) -> torch.Tensor:
    return torch.zeros(batch, *candidate.input_shape)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
