"""User datasets uploaded as ``.npz`` (no pickle): validated, stored, loaded with fixed splits.

An upload holds ``x_train``, ``y_train``, ``x_test``, ``y_test`` and optionally ``x_val`` /
``y_val`` (else 10 % of train, stratified, by seed). ``x`` is float or uint8, shaped (N, F) or
(N, C, H, W) with C <= 4; ``y`` integer class ids from 0. uint8 images are scaled to [0, 1].
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from workers.data._registry import DatasetInfo, Split, Splits, UnknownDatasetError, stratified_split

PREFIX = "user/"
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
REQUIRED = ("x_train", "y_train", "x_test", "y_test")
OPTIONAL = ("x_val", "y_val")


class DatasetFormatError(ValueError):
    """An upload that is not a valid dataset (the message names the array and the problem)."""


def validate_npz(blob: bytes) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Parse and check an upload; return its arrays (x as float32) and a description."""
    if not blob.startswith(b"PK"):  # np.load would try anything else as a pickle
        raise DatasetFormatError("not a readable .npz file (an .npz is a zip archive)")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as e:  # object arrays need pickle: refused
        raise DatasetFormatError(f"not a plain .npz (object arrays are refused): {e}") from None
    except Exception as e:
        raise DatasetFormatError(f"not a readable .npz file: {e}") from None
    unknown = set(arrays) - set(REQUIRED) - set(OPTIONAL)
    if unknown:
        raise DatasetFormatError(
            f"unexpected arrays {sorted(unknown)}; allowed: {REQUIRED + OPTIONAL}"
        )
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
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if x.dtype not in (np.float32, np.float64, np.uint8):
            raise DatasetFormatError(f"x_{part}: dtype {x.dtype} (use float32, float64 or uint8)")
        if x.ndim not in (2, 4) or (x.ndim == 4 and x.shape[1] > 4):
            raise DatasetFormatError(f"x_{part}: shape {x.shape} (use (N, F) or (N, C<=4, H, W))")
        if shape is not None and x.shape[1:] != shape:
            raise DatasetFormatError(f"x_{part}: sample shape {x.shape[1:]} differs from {shape}")
        shape = x.shape[1:]
        if y.ndim != 1 or y.shape[0] != x.shape[0] or not np.issubdtype(y.dtype, np.integer):
            raise DatasetFormatError(
                f"y_{part}: need {x.shape[0]} integer labels, got {y.dtype} {y.shape}"
            )
        if len(y) < 10:
            raise DatasetFormatError(f"{part}: {len(y)} rows; at least 10 needed")
        if y.min() < 0:
            raise DatasetFormatError(f"y_{part}: negative label {int(y.min())}")
        if x.dtype != np.uint8 and not np.isfinite(x).all():
            raise DatasetFormatError(f"x_{part}: contains NaN or infinity")
        classes = max(classes, int(y.max()) + 1)
        scale = 255.0 if x.dtype == np.uint8 else 1.0
        arrays[f"x_{part}"] = (x.astype(np.float32) / scale).astype(np.float32)
        arrays[f"y_{part}"] = y.astype(np.int64)
    if classes < 2:
        raise DatasetFormatError("labels name fewer than 2 classes")
    assert shape is not None
    info = {
        "input_shape": list(shape),
        "num_classes": classes,
        "sizes": {k[2:]: int(v.shape[0]) for k, v in arrays.items() if k.startswith("y_")},
    }
    return arrays, info


def save_user_dataset(root: Path, name: str, blob: bytes) -> dict[str, Any]:
    """Validate ``blob`` and store it as ``root/<name>.npz`` + ``<name>.json``; return its info."""
    if not NAME.match(name):
        raise DatasetFormatError(f"name {name!r}: use 1-64 of a-z, 0-9, '_' and '-'")
    arrays, info = validate_npz(blob)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{name}.{os.getpid()}.npz"
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, root / f"{name}.npz")
    (root / f"{name}.json").write_text(json.dumps(info))
    return info


def user_info(root: Path, dataset: str) -> DatasetInfo:
    """The registry entry of ``user/<name>`` stored under ``root``."""
    name = dataset.removeprefix(PREFIX)
    meta = root / f"{name}.json"
    if not dataset.startswith(PREFIX) or not meta.is_file():
        raise UnknownDatasetError(f"unknown dataset {dataset!r}: upload it with POST /v1/datasets")
    info = json.loads(meta.read_text())
    return DatasetInfo(
        dataset,
        "uploaded .npz",
        tuple(info["input_shape"]),
        int(info["num_classes"]),
        lambda seed: load_user(root, dataset, seed),
    )


def load_user(root: Path, dataset: str, seed: int) -> Splits:
    with np.load(root / f"{dataset.removeprefix(PREFIX)}.npz", allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    train = Split(a["x_train"], a["y_train"], np.arange(len(a["y_train"])))
    if "x_val" in a:
        val = Split(a["x_val"], a["y_val"])
    else:
        train, val, _ = stratified_split(a["x_train"], a["y_train"], (0.1, 0.0), seed)
    return Splits(
        train,
        val,
        Split(a["x_test"], a["y_test"], np.arange(len(a["y_test"]))),
        seed,
        "uploaded arrays (uint8 / 255)",
    )
