"""Dataset registry: names, shapes and loaders with fixed-seed train/val/test splits.

Importing this module is cheap (no torch): the API validates dataset names against it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from search_spaces import HwnasError
from workers.data._rows import Rows, take


class UnknownDatasetError(HwnasError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DatasetUnavailableError(HwnasError, FileNotFoundError):
    """The dataset's files are not on this machine."""


@dataclass(frozen=True)
class Split:
    x: Rows  # float32 samples: an array, or rows read from disk a batch at a time
    y: NDArray[np.int64]
    index: NDArray[np.int64] | None = None  # rows of the source data, when it is one array

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Splits:
    train: Split
    val: Split
    test: Split
    seed: int
    preprocessing: str

    def describe(self) -> dict[str, object]:
        return {
            "seed": self.seed,
            "sizes": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
            "preprocessing": self.preprocessing,
        }


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    input_shape: tuple[int, ...]
    num_classes: int
    loader: Callable[[int], Splits]
    value_range: tuple[float, float] | None = None  # of x, where known (images: [0, 1])


_DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    if info.name in _DATASETS:
        raise ValueError(f"dataset {info.name!r} already registered")
    _DATASETS[info.name] = info
    return info


def get_dataset(name: str, user_dir: Path | None = None) -> DatasetInfo:
    """A built-in dataset, or ``user/<name>`` uploaded into ``user_dir``."""
    if name.startswith("user/") and user_dir is not None:
        from workers.data._user import user_info

        return user_info(user_dir, name)
    try:
        return _DATASETS[name]
    except KeyError:
        hint = " (uploaded datasets are named user/<name>)" if "/" not in name else ""
        raise UnknownDatasetError(
            f"unknown dataset {name!r}; known: {sorted(_DATASETS)}{hint}"
        ) from None


def list_datasets() -> list[DatasetInfo]:
    return [_DATASETS[k] for k in sorted(_DATASETS)]


def load_splits(name: str, seed: int = 0, user_dir: Path | None = None) -> Splits:
    """Train/val/test splits of dataset ``name``, identical for the same seed."""
    return get_dataset(name, user_dir).loader(seed)


def stratified_split(
    x: Rows, y: NDArray[np.int64], fractions: tuple[float, float], seed: int
) -> tuple[Split, Split, Split]:
    """Split into train/val/test with val and test taking ``fractions`` of each class."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[], [], []]
    for cls in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == cls))
        n_val, n_test = (round(f * len(idx)) for f in fractions)
        parts[1] += idx[:n_val].tolist()
        parts[2] += idx[n_val : n_val + n_test].tolist()
        parts[0] += idx[n_val + n_test :].tolist()
    out = []
    for p in parts:
        arr = np.sort(np.asarray(p, dtype=np.int64))
        out.append(Split(take(x, arr), y[arr], arr))
    return out[0], out[1], out[2]
