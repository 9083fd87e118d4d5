"""User datasets uploaded as ``.npz`` (no pickle): validated, stored, loaded with fixed splits.

An upload holds ``x_train``, ``y_train``, ``x_test``, ``y_test`` and optionally ``x_val`` /
``y_val`` (else 10 % of train, stratified, by seed). ``x`` is float or uint8, shaped (N, F),
(N, H, W) (grayscale, stored as (N, 1, H, W)) or (N, C, H, W) with C <= 4; ``y`` integer class
ids from 0. uint8 images are scaled to [0, 1].

An upload is checked from its zip directory and ``.npy`` headers before any array is
decompressed: a few kilobytes of zip can declare gigabytes of zeros, so the sizes the archive
declares, and what the arrays become once decoded (x as float32, y as int64), must fit
``max_decoded_bytes``. Only then are the arrays read.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from search_spaces import HwnasError
from workers.data._registry import DatasetInfo, Split, Splits, UnknownDatasetError, stratified_split

PREFIX = "user/"
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
REQUIRED = ("x_train", "y_train", "x_test", "y_test")
OPTIONAL = ("x_val", "y_val")
DEFAULT_MAX_DECODED_BYTES = 1 << 30
# What np.savez / np.savez_compressed write. zipfile inflates bzip2 and lzma members a whole
# compressed chunk at a time, without the output bound it gives deflate, so they are refused.
_COMPRESSIONS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}


class DatasetFormatError(HwnasError, ValueError):
    """An upload that is not a valid dataset (the message names the array and the problem)."""


class DatasetTooLargeError(DatasetFormatError):
    """An upload whose arrays, as declared or once decoded, exceed the size limit."""


def _size(n: int) -> str:
    """``n`` bytes for a person: 512 B, 4.5 KiB, 179 MiB, 2 GiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _dims(shape: tuple[int, ...]) -> str:
    return " x ".join(str(d) for d in shape) if shape else "scalar"


def _npy_header(f: IO[bytes]) -> tuple[tuple[int, ...], np.dtype[Any], int]:
    """Shape, dtype and header length of the ``.npy`` at the start of ``f`` (no data read)."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    else:  # 3.0 only exists for structured dtypes with non-latin-1 field names
        raise ValueError(f".npy format version {version[0]}.{version[1]} (use np.savez)")
    return tuple(shape), dtype, f.tell()


def _check_zip(blob: bytes, max_decoded_bytes: int) -> None:
    """Refuse an upload from its zip directory and ``.npy`` headers, before decompressing it.

    zipfile never returns more than a member's declared ``file_size`` (a stream that inflates
    to more is cut there and fails its CRC), so once each declared size matches its header's
    shape and dtype, and the total fits, reading the arrays stays within the limit.

    Raises:
        DatasetFormatError: not a zip, unknown or duplicate members, a header that is not a
            plain .npy array (object arrays and pickles), or a header that lies about its size.
        DatasetTooLargeError: the declared or decoded sizes exceed ``max_decoded_bytes``.
    """
    allowed = REQUIRED + OPTIONAL
    try:
        zf = zipfile.ZipFile(io.BytesIO(blob))
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise DatasetFormatError(f"not a readable .npz file: {e}") from None
    with zf:
        members = zf.infolist()
        if len(members) > len(allowed):
            raise DatasetFormatError(
                f"{len(members)} members in the zip; an .npz holds at most {len(allowed)} "
                f"arrays: {allowed}"
            )
        names = [m.filename.removesuffix(".npy") for m in members]
        unknown = sorted(
            n if m.filename.endswith(".npy") else m.filename
            for m, n in zip(members, names, strict=True)
            if n not in allowed or not m.filename.endswith(".npy")
        )
        if unknown:
            raise DatasetFormatError(f"unexpected arrays {unknown}; allowed: {allowed}")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise DatasetFormatError(f"arrays {duplicates} appear more than once in the zip")
        for m, name in zip(members, names, strict=True):
            if m.flag_bits & 0x1:
                raise DatasetFormatError(f"{name}: encrypted in the zip (upload it unencrypted)")
            if m.compress_type not in _COMPRESSIONS:
                raise DatasetFormatError(
                    f"{name}: zip compression method {m.compress_type} "
                    "(use np.savez or np.savez_compressed: stored or deflate)"
                )
        declared = sum(m.file_size for m in members)
        if declared > max_decoded_bytes:
            big = max(members, key=lambda m: m.file_size)
            raise DatasetTooLargeError(
                f"{big.filename.removesuffix('.npy')}: {_size(big.file_size)} uncompressed "
                f"({_size(declared)} for all arrays), over the {_size(max_decoded_bytes)} limit"
            )
        decoded = 0
        for m, name in zip(members, names, strict=True):
            try:
                with zf.open(m) as f:
                    shape, dtype, header = _npy_header(f)
            except ValueError as e:
                raise DatasetFormatError(f"{name}: not a .npy array: {e}") from None
            except (zipfile.BadZipFile, EOFError, OSError) as e:  # CRC, truncated stream
                raise DatasetFormatError(f"not a readable .npz file: {e}") from None
            if dtype.hasobject:
                raise DatasetFormatError(
                    f"{name}: dtype {dtype}: not a plain .npz (object arrays are refused)"
                )
            if any(d < 0 for d in shape):
                raise DatasetFormatError(f"{name}: negative dimension in shape {shape}")
            count = math.prod(shape)
            if m.file_size != header + count * dtype.itemsize:
                raise DatasetFormatError(
                    f"{name}: the zip declares {m.file_size} bytes but its header says "
                    f"{_dims(shape)} {dtype} = {header + count * dtype.itemsize} bytes; "
                    "not a valid .npy"
                )
            target = "float32" if name.startswith("x_") else "int64"
            size = count * np.dtype(target).itemsize
            decoded += size
            if decoded > max_decoded_bytes:
                total = "" if decoded == size else f" ({_size(decoded)} with the arrays before it)"
                raise DatasetTooLargeError(
                    f"{name}: {_dims(shape)} {dtype} = {_size(size)} decoded as {target}{total}, "
                    f"over the {_size(max_decoded_bytes)} limit"
                )


def validate_npz(
    blob: bytes, *, max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Parse and check an upload; return its arrays (x as float32, y as int64) and a description.

    Args:
        blob: the bytes of an ``.npz`` (a zip of ``.npy`` arrays, as ``np.savez`` writes).
        max_decoded_bytes: the most the arrays may declare uncompressed in the zip, and the
            most they may take once decoded (x as float32, y as int64); checked from the
            headers before any array is decompressed.

    Raises:
        DatasetTooLargeError: the arrays exceed ``max_decoded_bytes``.
        DatasetFormatError: anything else that makes it not a valid dataset.
    """
    if not blob.startswith(b"PK"):  # np.load would try anything else as a pickle
        raise DatasetFormatError("not a readable .npz file (an .npz is a zip archive)")
    _check_zip(blob, max_decoded_bytes)
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
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if x.dtype not in (np.float32, np.float64, np.uint8):
            raise DatasetFormatError(f"x_{part}: dtype {x.dtype} (use float32, float64 or uint8)")
        if x.ndim == 3:  # grayscale (N, H, W): one channel
            x = x.reshape(x.shape[0], 1, *x.shape[1:])
        if x.ndim not in (2, 4) or (x.ndim == 4 and x.shape[1] > 4):
            raise DatasetFormatError(
                f"x_{part}: shape {arrays[f'x_{part}'].shape} "
                "(use (N, F), (N, H, W) or (N, C<=4, H, W))"
            )
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
        xf = x.astype(np.float32)
        if x.dtype == np.uint8:
            xf /= np.float32(255.0)  # in place: one float32 copy, not three
        arrays[f"x_{part}"] = xf
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


def save_user_dataset(
    root: Path, name: str, blob: bytes, *, max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES
) -> dict[str, Any]:
    """Validate ``blob`` and store it as ``root/<name>.npz`` + ``<name>.json``; return its info.

    Raises:
        DatasetFormatError: a bad name, or an upload :func:`validate_npz` refuses
            (:class:`DatasetTooLargeError` when over ``max_decoded_bytes``).
    """
    if not NAME.fullmatch(name):
        raise DatasetFormatError(f"name {name!r}: use 1-64 of a-z, 0-9, '_' and '-'")
    arrays, info = validate_npz(blob, max_decoded_bytes=max_decoded_bytes)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{name}.{os.getpid()}.npz"
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, root / f"{name}.npz")
    (root / f"{name}.json").write_text(json.dumps(info))
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
        "uploaded .npz",
        tuple(info["input_shape"]),
        int(info["num_classes"]),
        lambda seed: load_user(root, dataset, seed),
    )


def load_user(root: Path, dataset: str, seed: int) -> Splits:
    """Splits of the uploaded ``user/<name>`` under ``root``; the same for the same seed.

    Raises:
        UnknownDatasetError: ``dataset`` is not a valid ``user/<name>``.
    """
    with np.load(root / f"{_stored_name(dataset)}.npz", allow_pickle=False) as z:
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
