"""Built-in datasets: sklearn's digits (tiny default) and Fashion-MNIST (Debian package)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from workers.data._registry import (
    DatasetInfo,
    DatasetUnavailableError,
    Split,
    Splits,
    register_dataset,
    stratified_split,
)

FASHION_DIRS = ("/usr/share/datasets/fashion-mnist",)


def _digits(seed: int) -> Splits:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = d.target.astype(np.int64)
    train, val, test = stratified_split(x, y, (0.2, 0.2), seed)
    return Splits(train, val, test, seed, "pixels / 16, shape (N, 1, 8, 8)")


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_dir() -> Path:
    """Where the Fashion-MNIST idx files are (``HWNAS_DATA_DIR`` first)."""
    candidates = [os.environ.get("HWNAS_DATA_DIR", ""), *FASHION_DIRS]
    for c in candidates:
        if c and (Path(c) / "t10k-labels-idx1-ubyte.gz").is_file():
            return Path(c)
    raise DatasetUnavailableError(
        "Fashion-MNIST not found: install Debian's dataset-fashion-mnist "
        "(apt-get install dataset-fashion-mnist) or set HWNAS_DATA_DIR to a folder with the idx "
        f"files; looked in {[c for c in candidates if c]}"
    )


def _fashion(seed: int) -> Splits:
    d = fashion_dir()
    xs = _read_idx(d / "train-images-idx3-ubyte.gz").astype(np.float32)[:, None] / 255.0
    ys = _read_idx(d / "train-labels-idx1-ubyte.gz").astype(np.int64)
    xt = _read_idx(d / "t10k-images-idx3-ubyte.gz").astype(np.float32)[:, None] / 255.0
    yt = _read_idx(d / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    train, val, _ = stratified_split(xs, ys, (1 / 12, 0.0), seed)  # 55k / 5k
    return Splits(train, val, Split(xt, yt), seed, "pixels / 255, shape (N, 1, 28, 28)")


register_dataset(
    DatasetInfo("digits", "sklearn 8x8 handwritten digits, 1,797 images", (1, 8, 8), 10, _digits)
)
register_dataset(
    DatasetInfo(
        "fashion_mnist", "Fashion-MNIST 28x28, 60k train / 10k test", (1, 28, 28), 10, _fashion
    )
)
