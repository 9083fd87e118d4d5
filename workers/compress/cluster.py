"""Weight sharing: per-layer k-means codebooks (Deep Compression, Han et al. 2016).

A layer with ``wformat="kmeans"`` and ``wbits=b`` keeps 2^b float centroids; every weight is
the centroid its index names. Centroids start linearly spaced between the layer's smallest and
largest weight (the initialisation Han et al. found best), Lloyd's iterations assign and
re-centre, then fine-tuning trains the centroids only (each centroid's gradient is the sum of
its weights' gradients), the indices fixed. Zeros of a sparse layer stay zero and are not
clustered (the bitmask keeps them). Baking leaves the plain weight tensor holding at most 2^b
distinct non-zero values, which :func:`codebook_of` reads back for the packed file.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.nn.utils import parametrize

from workers.models import CompressibleNet, spec_of, weight_layers

_ITERS = 25


def kmeans_1d(
    values: torch.Tensor, k: int, iters: int = _ITERS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Centroids (k, float32) and the index (int64) of each value, linear init + Lloyd."""
    v = values.detach().flatten().float()
    lo, hi = float(v.min()), float(v.max())
    centroids = torch.linspace(lo, hi, k) if hi > lo else torch.full((k,), lo)
    idx = torch.zeros_like(v, dtype=torch.int64)
    for _ in range(iters):
        idx = torch.bucketize(v, (centroids[1:] + centroids[:-1]) / 2)  # nearest (sorted)
        sums = torch.zeros(k).index_add_(0, idx, v)
        counts = torch.zeros(k).index_add_(0, idx, torch.ones_like(v))
        new = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
        new, _ = torch.sort(new)
        if torch.allclose(new, centroids):
            break
        centroids = new
    idx = torch.bucketize(v, (centroids[1:] + centroids[:-1]) / 2)
    return centroids, idx


class ClusteredWeight(nn.Module):
    """Parametrization: the weight is ``codebook[index]`` (zeros kept where the weight was 0
    when attached); the codebook is the trainable parameter."""

    def __init__(self, w: torch.Tensor, bits: int, sparse: bool = False) -> None:
        super().__init__()
        w = w.detach()
        nonzero = w != 0 if sparse else torch.ones_like(w, dtype=torch.bool)
        values = w[nonzero] if bool(nonzero.any()) else w.flatten()
        centroids, idx = kmeans_1d(values, 2**bits)
        full = torch.zeros(w.shape, dtype=torch.int64)
        full[nonzero] = idx
        self.codebook = nn.Parameter(centroids.to(w.dtype))
        self.register_buffer("index", full)
        self.register_buffer("mask", nonzero.to(w.dtype))

    index: torch.Tensor
    mask: torch.Tensor

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.codebook[self.index] * self.mask


def attach_clusters(net: CompressibleNet) -> int:
    """Cluster every ``kmeans`` layer's (current) weights, in place; returns how many."""
    count = 0
    for _, layer in weight_layers(net):
        spec = spec_of(layer)
        if spec.wformat != "kmeans":
            continue
        if parametrize.is_parametrized(layer, "weight"):
            raise ValueError("attach_clusters needs plain weights (bake parametrizations first)")
        parametrize.register_parametrization(
            layer, "weight", ClusteredWeight(layer.weight.detach(), spec.wbits, spec.sparsity > 0)
        )
        count += 1
    return count


def codebook_of(
    w: NDArray[np.float32], bits: int, sparse: bool = False
) -> tuple[NDArray[np.float32], NDArray[np.int32]]:
    """The codebook (sorted distinct values, padded to 2^bits) and the index of each weight
    (``sparse``: of each non-zero weight), read back from a baked k-means weight.

    Raises:
        ValueError: the weight has more distinct values than 2^bits.
    """
    flat = w.reshape(-1)
    values = flat[flat != 0] if sparse else flat
    book, index = np.unique(values, return_inverse=True)
    if len(book) > 2**bits:
        raise ValueError(f"{len(book)} distinct weights do not fit a {bits}-bit codebook")
    book = np.concatenate([book, np.zeros(2**bits - len(book), book.dtype)]).astype(np.float32)
    return book, index.astype(np.int32)
