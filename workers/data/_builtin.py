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


FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# sha256 of the *decompressed* idx files (the .gz bytes differ between Debian and upstream)
FASHION_SHA256 = {
    "train-images-idx3-ubyte.gz": (
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"
    ),
    "train-labels-idx1-ubyte.gz": (
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"
    ),
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


def fashion_dir() -> Path:
    """Where the Fashion-MNIST idx files are: ``HWNAS_DATA_DIR``, Debian's package, or a
    download into ``~/.cache/hwnas/fashion-mnist`` (checksummed) when ``HWNAS_DOWNLOAD=1``."""
    cache = Path.home() / ".cache" / "hwnas" / "fashion-mnist"
    candidates = [os.environ.get("HWNAS_DATA_DIR", ""), *FASHION_DIRS, str(cache)]
    for c in candidates:
        if c and (Path(c) / "t10k-labels-idx1-ubyte.gz").is_file():
            return Path(c)
    if os.environ.get("HWNAS_DOWNLOAD") == "1":
        return download_fashion(cache)
    raise DatasetUnavailableError(
        "Fashion-MNIST not found: install Debian's dataset-fashion-mnist "
        "(apt-get install dataset-fashion-mnist), set HWNAS_DATA_DIR to a folder with the idx "
        f"files, or set HWNAS_DOWNLOAD=1; looked in {[c for c in candidates if c]}"
    )


def download_fashion(dest: Path, base_url: str = FASHION_URL) -> Path:
    """Fetch the four idx files and verify each against its known checksum."""
    import hashlib
    import urllib.request

    dest.mkdir(parents=True, exist_ok=True)
    for name, digest in FASHION_SHA256.items():
        target = dest / name
        if target.is_file():
            continue
        try:
            with urllib.request.urlopen(base_url + name, timeout=60) as r:
                blob = r.read()
        except OSError as e:
            raise DatasetUnavailableError(f"downloading {base_url + name} failed: {e}") from e
        got = hashlib.sha256(gzip.decompress(blob)).hexdigest()
        if got != digest:
            raise DatasetUnavailableError(f"{name}: checksum {got} != expected {digest}")
        tmp = target.with_suffix(".part")
        tmp.write_bytes(blob)
        tmp.replace(target)
    return dest


def _fashion(seed: int) -> Splits:
    d = fashion_dir()
    xs = _read_idx(d / "train-images-idx3-ubyte.gz").astype(np.float32)[:, None] / 255.0
    ys = _read_idx(d / "train-labels-idx1-ubyte.gz").astype(np.int64)
    xt = _read_idx(d / "t10k-images-idx3-ubyte.gz").astype(np.float32)[:, None] / 255.0
    yt = _read_idx(d / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    train, val, _ = stratified_split(xs, ys, (1 / 12, 0.0), seed)  # 55k / 5k
    return Splits(train, val, Split(xt, yt), seed, "pixels / 255, shape (N, 1, 28, 28)")


def _fashion_small(seed: int) -> Splits:
    """A fixed stratified 8,000-image subset of Fashion-MNIST's training set (the same rows for
    every split seed), split 5,000 / 1,000 / 2,000, for searches that must fit minutes.

    Each split's ``index`` is rows of Fashion-MNIST's *training file*
    (``train-images-idx3-ubyte.gz``), so a card's ``test_indices`` can be read back from the
    Debian files alone."""
    full = _fashion(0)
    x = np.concatenate([full.train.x, full.val.x])
    y = np.concatenate([full.train.y, full.val.y])
    assert full.train.index is not None and full.val.index is not None
    source = np.concatenate([full.train.index, full.val.index])
    rows = np.sort(np.random.default_rng(20261128).permutation(len(y))[:8000])
    parts = stratified_split(x[rows], y[rows], (0.125, 0.25), seed)
    train, val, test = (
        Split(p.x, p.y, None if p.index is None else source[rows][p.index]) for p in parts
    )
    return Splits(
        train,
        val,
        test,
        seed,
        "Fashion-MNIST subset, pixels / 255, (N, 1, 28, 28); indices are rows of the training file",
    )


register_dataset(
    DatasetInfo(
        "digits", "sklearn 8x8 handwritten digits, 1,797 images", (1, 8, 8), 10, _digits, (0.0, 1.0)
    )
)
register_dataset(
    DatasetInfo(
        "fashion_mnist",
        "Fashion-MNIST 28x28, 60k train / 10k test",
        (1, 28, 28),
        10,
        _fashion,
        (0.0, 1.0),
    )
)
register_dataset(
    DatasetInfo(
        "fashion_mnist_small",
        "Fashion-MNIST, a fixed 8k-image subset: 5k train / 1k val / 2k test",
        (1, 28, 28),
        10,
        _fashion_small,
        (0.0, 1.0),
    )
)
