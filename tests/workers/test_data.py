"""Datasets: fixed-seed, disjoint, stratified splits that the model card's indices point into."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from workers.data import (
    DatasetUnavailableError,
    Splits,
    UnknownDatasetError,
    get_dataset,
    list_datasets,
    load_splits,
)
from workers.data._builtin import FASHION_DIRS

DIGITS_ROWS = 1797


@pytest.fixture(scope="module")
def digits() -> Splits:
    return load_splits("digits", seed=0)


def test_registry_lists_builtin_datasets() -> None:
    names = [d.name for d in list_datasets()]
    assert {"digits", "fashion_mnist"} <= set(names)
    info = get_dataset("digits")
    assert info.input_shape == (1, 8, 8)
    assert info.num_classes == 10


def test_unknown_dataset_lists_known() -> None:
    with pytest.raises(UnknownDatasetError) as info:
        load_splits("imagenet")
    assert isinstance(info.value, KeyError)
    assert "unknown dataset 'imagenet'" in str(info.value)
    assert "'digits'" in str(info.value)


def test_digits_shapes_and_values(digits: Splits) -> None:
    for split in (digits.train, digits.val, digits.test):
        assert split.x.shape == (len(split), 1, 8, 8)
        assert split.x.dtype == np.float32
        assert split.y.dtype == np.int64
        assert split.x.min() >= 0.0 and split.x.max() <= 1.0
    assert digits.train.x.max() == 1.0
    assert digits.describe()["sizes"] == {
        "train": len(digits.train),
        "val": len(digits.val),
        "test": len(digits.test),
    }


def test_digits_splits_are_deterministic(digits: Splits) -> None:
    again = load_splits("digits", seed=0)
    for a, b in zip(
        (digits.train, digits.val, digits.test), (again.train, again.val, again.test), strict=True
    ):
        assert a.index is not None and b.index is not None
        np.testing.assert_array_equal(a.index, b.index)
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)


def test_digits_splits_are_disjoint_and_cover_all_rows(digits: Splits) -> None:
    idx = [s.index for s in (digits.train, digits.val, digits.test)]
    assert all(i is not None for i in idx)
    train, val, test = (set(i.tolist()) for i in idx if i is not None)
    assert not train & val and not train & test and not val & test
    assert train | val | test == set(range(DIGITS_ROWS))
    assert len(digits.train) + len(digits.val) + len(digits.test) == DIGITS_ROWS
    # 60 / 20 / 20 per class, rounded per class
    assert abs(len(digits.val) - 0.2 * DIGITS_ROWS) <= 10
    assert abs(len(digits.test) - 0.2 * DIGITS_ROWS) <= 10


def test_digits_index_points_at_source_rows(digits: Splits) -> None:
    from sklearn.datasets import load_digits

    src = load_digits()
    test = digits.test
    assert test.index is not None
    np.testing.assert_array_equal(test.y, src.target[test.index])
    np.testing.assert_allclose(test.x[:, 0], src.images[test.index] / 16.0)


def test_digits_splits_are_stratified(digits: Splits) -> None:
    all_y = np.concatenate([digits.train.y, digits.val.y, digits.test.y])
    overall = np.bincount(all_y, minlength=10) / len(all_y)
    for split in (digits.train, digits.val, digits.test):
        counts = np.bincount(split.y, minlength=10)
        assert (counts > 0).all(), "every class in every split"
        np.testing.assert_allclose(counts / len(split), overall, atol=0.01)


def test_different_seed_gives_a_different_split(digits: Splits) -> None:
    other = load_splits("digits", seed=1)
    assert other.seed == 1
    assert digits.test.index is not None and other.test.index is not None
    assert not np.array_equal(digits.test.index, other.test.index)
    assert len(other.test) == len(digits.test)  # same per-class sizes, other rows


def _fashion_dir() -> Path | None:
    for d in (os.environ.get("HWNAS_DATA_DIR", ""), *FASHION_DIRS):
        if d and (Path(d) / "t10k-labels-idx1-ubyte.gz").is_file():
            return Path(d)
    return None


def test_fashion_mnist_sizes() -> None:
    if _fashion_dir() is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must have Fashion-MNIST in {FASHION_DIRS[0]} (dataset-fashion-mnist)")
        pytest.skip(f"Fashion-MNIST not installed ({FASHION_DIRS[0]} missing)")
    splits = load_splits("fashion_mnist", seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (55_000, 5_000, 10_000)
    assert splits.train.x.shape[1:] == (1, 28, 28)
    assert splits.train.x.dtype == np.float32
    assert 0.0 <= splits.test.x.min() and splits.test.x.max() <= 1.0
    assert (np.bincount(splits.val.y, minlength=10) == 500).all()
    assert splits.train.index is not None and splits.val.index is not None
    assert not set(splits.train.index.tolist()) & set(splits.val.index.tolist())


def test_fashion_mnist_missing_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import workers.data._builtin as builtin

    monkeypatch.setattr(builtin, "FASHION_DIRS", (str(tmp_path / "nowhere"),))
    monkeypatch.setenv("HWNAS_DATA_DIR", str(tmp_path))  # an empty folder
    with pytest.raises(DatasetUnavailableError, match="apt-get install dataset-fashion-mnist"):
        load_splits("fashion_mnist", seed=0)


def test_fashion_small_indices_are_rows_of_the_training_file() -> None:
    """A card's test_indices for the subset read back from the Debian files alone (as
    examples/load_bundle.py does): the same images and labels."""
    d = _fashion_dir()
    if d is None:
        pytest.skip("Fashion-MNIST not installed")
    import gzip

    def idx_file(name: str) -> np.ndarray:
        raw = gzip.open(d / name).read()
        dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(raw[3])]
        return np.frombuffer(raw, np.uint8, offset=4 + 4 * raw[3]).reshape(dims)

    splits = load_splits("fashion_mnist_small", seed=1)
    images, labels = idx_file("train-images-idx3-ubyte.gz"), idx_file("train-labels-idx1-ubyte.gz")
    for split in (splits.train, splits.val, splits.test):
        assert split.index is not None
        np.testing.assert_array_equal(split.x[:, 0], images[split.index] / np.float32(255.0))
        np.testing.assert_array_equal(split.y, labels[split.index])
    rows = np.concatenate([splits.train.index, splits.val.index, splits.test.index])
    assert len(np.unique(rows)) == len(rows) == 8000
