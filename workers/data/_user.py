"""User datasets uploaded as ``.npz`` (no pickle): validated, stored, loaded with fixed splits.

An upload holds ``x_train``, ``y_train``, ``x_test``, ``y_test`` and optionally ``x_val`` /
``y_val`` (else 10 % of train, stratified, by seed). ``x`` is float or uint8, shaped (N, F),
(N, H, W) (grayscale, stored as (N, 1, H, W)) or (N, C, H, W) with C <= 4, every dimension at
least 1; ``y`` integer class ids ``0 .. C-1`` (``C`` bounded by :class:`UploadLimits`), each
class present in ``y_train``. uint8 images are scaled to [0, 1]; every value must stay finite
as the float32 it is stored as.

Sizes are judged from the zip directory and the ``.npy`` headers before anything is
decompressed (:mod:`workers.data._npz`); values once the arrays are read, each check on the
array as uploaded before any cast (a uint64 label 2**64-1 would become -1 as int64).
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from workers.data._npz import (
    REQUIRED,
    DatasetFormatError,
    UploadLimits,
    check_zip,
)
from workers.data._registry import DatasetInfo, Splits, UnknownDatasetError
from workers.data._stored import DatasetWriter, load_stored

PREFIX = "user/"
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_LAYOUTS = "(use (N, F), (N, H, W) or (N, C<=4, H, W))"


def _features(part: str, x: np.ndarray) -> np.ndarray:
    """``x_<part>`` as float32 (N, F) or (N, C, H, W), refused unless every value is finite
    there and every sample dimension is at least 1."""
    name = f"x_{part}"
    if x.dtype not in (np.float32, np.float64, np.uint8):
        raise DatasetFormatError(f"{name}: dtype {x.dtype} (use float32, float64 or uint8)")
    shape = x.shape
    if x.ndim == 3:  # grayscale (N, H, W): one channel
        x = x.reshape(x.shape[0], 1, *x.shape[1:])
    if x.ndim not in (2, 4) or (x.ndim == 4 and x.shape[1] > 4):
        raise DatasetFormatError(f"{name}: shape {shape} {_LAYOUTS}")
    if 0 in x.shape[1:]:
        what = ("features",) if x.ndim == 2 else ("channels", "height", "width")
        empty = [w for w, d in zip(what, x.shape[1:], strict=True) if d == 0]
        raise DatasetFormatError(
            f"{name}: shape {shape} has {' and '.join(empty)} = 0; every dimension of a sample "
            f"must be at least 1 {_LAYOUTS}"
        )
    with np.errstate(over="ignore", invalid="ignore"):
        xf = x.astype(np.float32)
    if x.dtype == np.uint8:
        xf /= np.float32(255.0)  # in place: one float32 copy, not three
    elif not np.isfinite(xf).all():
        bad = int(np.count_nonzero(~np.isfinite(xf)))
        finite = np.isfinite(x)
        why = (
            "NaN or infinity"
            if not finite.all()
            else f"values beyond float32's range (largest |x| {float(np.abs(x).max()):.3g})"
        )
        raise DatasetFormatError(
            f"{name}: {bad} values are not finite as float32 (how it is stored): {why}"
        )
    return xf


def _labels(part: str, y: np.ndarray, rows: int, max_classes: int) -> np.ndarray:
    """``y_<part>`` as int64, checked on its own dtype first (no wrap-around in a cast)."""
    name = f"y_{part}"
    if y.ndim != 1 or y.shape[0] != rows or y.dtype.kind not in "iu":
        raise DatasetFormatError(f"{name}: need {rows} integer labels, got {y.dtype} {y.shape}")
    if len(y) < 10:
        raise DatasetFormatError(f"{name}: {len(y)} rows; at least 10 needed")
    low, high = int(y.min()), int(y.max())  # Python ints: exact for any int/uint dtype
    if low < 0:
        raise DatasetFormatError(f"{name}: negative label {low}; labels are class ids 0 .. C-1")
    if high >= max_classes:
        raise DatasetFormatError(
            f"{name}: label {high} means at least {high + 1} classes; the service takes class "
            f"ids 0 .. {max_classes - 1} (at most {max_classes} classes, HWNAS_MAX_CLASSES)"
        )
    return y.astype(np.int64)


def validate_npz(
    blob: bytes, *, limits: UploadLimits | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Parse and check an upload; return its arrays (x as float32, y as int64) and a description.

    Args:
        blob: the bytes of an ``.npz`` (a zip of ``.npy`` arrays, as ``np.savez`` writes).
        limits: sizes, class count and decode ratio it may have (default :class:`UploadLimits`).

    Raises:
        DatasetTooLargeError: the arrays exceed the size or ratio limits.
        DatasetFormatError: anything else that makes it not a valid dataset (the message names
            the array, e.g. ``y_train``, and the problem).
    """
    limits = limits or UploadLimits()
    if not blob.startswith(b"PK"):  # np.load would try anything else as a pickle
        raise DatasetFormatError("not a readable .npz file (an .npz is a zip archive)")
    check_zip(blob, limits)
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # pickles were refused from the headers; this is a corrupt zip
        raise DatasetFormatError(f"not a readable .npz file: {e}") from None
    missing = [k for k in REQUIRED if k not in arrays]
    if ("x_val" in arrays) != ("y_val" in arrays):
        missing.append("y_val" if "x_val" in arrays else "x_val")
    if missing:
        raise DatasetFormatError(f"missing arrays {missing}")
    shape = None
    classes = 0
    for part in ("train", "val", "test"):
        if f"x_{part}" not in arrays:
            continue
        x = _features(part, arrays[f"x_{part}"])
        if shape is not None and x.shape[1:] != shape:
            raise DatasetFormatError(f"x_{part}: sample shape {x.shape[1:]} differs from {shape}")
        shape = x.shape[1:]
        y = _labels(part, arrays[f"y_{part}"], x.shape[0], limits.max_classes)
        classes = max(classes, int(y.max()) + 1)
        arrays[f"x_{part}"], arrays[f"y_{part}"] = x, y
    if classes < 2:
        raise DatasetFormatError("y_train: labels name fewer than 2 classes")
    absent = np.setdiff1d(np.arange(classes), arrays["y_train"])
    if absent.size:
        shown = ", ".join(str(int(c)) for c in absent[:10]) + (" ..." if absent.size > 10 else "")
        raise DatasetFormatError(
            f"y_train: {absent.size} of classes 0 .. {classes - 1} have no training example "
            f"({shown}); labels must be class ids 0 .. C-1, each one trained on"
        )
    assert shape is not None
    info = {
        "input_shape": list(shape),
        "num_classes": classes,
        "sizes": {k[2:]: int(v.shape[0]) for k, v in arrays.items() if k.startswith("y_")},
        "x_range": [
            min(float(v.min()) for k, v in arrays.items() if k.startswith("x_")),
            max(float(v.max()) for k, v in arrays.items() if k.startswith("x_")),
        ],
    }
    return arrays, info


def save_user_dataset(
    root: Path, name: str, blob: bytes, *, limits: UploadLimits | None = None
) -> dict[str, Any]:
    """Validate ``blob`` and store it under ``root`` (``<name>/<array>.npy`` + ``<name>.json``,
    :mod:`workers.data._stored`); return its info.

    Raises:
        DatasetFormatError: a bad name, or an upload :func:`validate_npz` refuses
            (:class:`DatasetTooLargeError` when over the size limits).
    """
    if not NAME.fullmatch(name):
        raise DatasetFormatError(f"name {name!r}: use 1-64 of a-z, 0-9, '_' and '-'")
    arrays, info = validate_npz(blob, limits=limits)
    writer = DatasetWriter(root, name)
    try:
        for key, value in arrays.items():
            writer.save(key, value)
        writer.commit({**info, "preprocessing": "uploaded .npz arrays (uint8 images / 255)"})
    except BaseException:
        writer.abort()
        raise
    return info


def _stored_name(dataset: str) -> str:
    """The ``<name>`` of ``user/<name>``, refused unless it is one :func:`save_user_dataset` takes.

    Checked before any path is built from it (``user/../../etc/passwd``).
    """
    name = dataset.removeprefix(PREFIX)
    if not dataset.startswith(PREFIX) or not NAME.fullmatch(name):
        raise UnknownDatasetError(
            f"unknown dataset {dataset!r}: uploaded datasets are named user/<name> "
            f"with <name> matching {NAME.pattern}"
        )
    return name


def dataset_identity(dataset: str, root: Path | None) -> str:
    """What a cache keyed by dataset must say: a built-in's name; for ``user/<name>``, the
    account's directory and the upload itself (its id, or for an upload stored before ids the
    time its description was written), so that neither another account's ``user/<name>`` nor a
    later upload under the same name hits an entry of this one."""
    if not dataset.startswith(PREFIX) or root is None:
        return dataset
    meta = root / f"{_stored_name(dataset)}.json"
    try:
        upload = json.loads(meta.read_text()).get("upload_id") or f"t{meta.stat().st_mtime_ns}"
    except (OSError, ValueError) as e:
        raise UnknownDatasetError(f"unknown dataset {dataset!r}: {e}") from None
    return f"{dataset}@{root.resolve()}#{upload}"


def user_info(root: Path, dataset: str) -> DatasetInfo:
    """The registry entry of ``user/<name>`` stored under ``root``.

    Raises:
        UnknownDatasetError: ``dataset`` is not a valid ``user/<name>``, or was not uploaded.
    """
    meta = root / f"{_stored_name(dataset)}.json"
    if not meta.is_file():
        raise UnknownDatasetError(f"unknown dataset {dataset!r}: upload it with POST /v1/datasets")
    info = json.loads(meta.read_text())
    return DatasetInfo(
        dataset,
        str(info.get("source", "uploaded .npz")),
        tuple(info["input_shape"]),
        int(info["num_classes"]),
        lambda seed: load_user(root, dataset, seed),
        tuple(info["x_range"]) if "x_range" in info else None,
    )


def load_user(root: Path, dataset: str, seed: int) -> Splits:
    """Splits of the uploaded ``user/<name>`` under ``root``; the same for the same seed.

    Raises:
        UnknownDatasetError: ``dataset`` is not a valid ``user/<name>``.
    """
    name = _stored_name(dataset)
    info = json.loads((root / f"{name}.json").read_text())
    return load_stored(root, name, seed, info)
