"""Datasets with fixed-seed splits. Cheap to import (numpy only)."""

from workers.data import _builtin  # noqa: F401  (registers digits, fashion_mnist)
from workers.data._registry import (
    DatasetInfo,
    DatasetUnavailableError,
    Split,
    Splits,
    UnknownDatasetError,
    get_dataset,
    list_datasets,
    load_splits,
)

__all__ = [
    "DatasetInfo",
    "DatasetUnavailableError",
    "Split",
    "Splits",
    "UnknownDatasetError",
    "get_dataset",
    "list_datasets",
    "load_splits",
]
