"""Datasets with fixed-seed splits. Cheap to import (numpy only)."""

from workers.data import _builtin  # noqa: F401  (registers digits, fashion_mnist)
from workers.data._images import is_image_zip, save_image_folder
from workers.data._npz import DatasetFormatError, DatasetTooLargeError, UploadLimits
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
from workers.data._user import dataset_identity, save_user_dataset, validate_npz

__all__ = [
    "dataset_identity",
    "DatasetFormatError",
    "DatasetTooLargeError",
    "UploadLimits",
    "is_image_zip",
    "save_image_folder",
    "save_user_dataset",
    "validate_npz",
    "DatasetInfo",
    "DatasetUnavailableError",
    "Split",
    "Splits",
    "UnknownDatasetError",
    "get_dataset",
    "list_datasets",
    "load_splits",
]
