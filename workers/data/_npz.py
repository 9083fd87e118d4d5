"""An uploaded ``.npz`` judged from its zip directory and ``.npy`` headers, before any array is
decompressed.

A few kilobytes of zip can declare gigabytes of zeros, so the sizes the archive declares, and
what the arrays become once decoded (x as float32, y as int64), must fit
:attr:`UploadLimits.max_decoded_bytes`; and a large dataset may not decode to more than
:attr:`UploadLimits.max_decode_ratio` times the bytes uploaded (a 70 KB deflated upload once
became 302 MB on disk). Only then are the arrays read.
"""

from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from search_spaces import HwnasError

REQUIRED = ("x_train", "y_train", "x_test", "y_test")
OPTIONAL = ("x_val", "y_val")
# What np.savez / np.savez_compressed write. zipfile inflates bzip2 and lzma members a whole
# compressed chunk at a time, without the output bound it gives deflate, so they are refused.
_COMPRESSIONS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
# Below this many decoded bytes the ratio is not judged: a small, very regular dataset (a toy
# of zeros and ones) may compress far better than any image set and still costs nothing.
RATIO_FLOOR_BYTES = 64 << 20


@dataclass(frozen=True)
class UploadLimits:
    """What an upload may be (the service sets them from ``HWNAS_*``; these are the defaults).

    Attributes:
        max_decoded_bytes: the most the arrays may declare uncompressed in the zip, and the
            most they may take once decoded (x as float32, y as int64).
        max_classes: labels must be class ids ``0 .. C-1`` with ``C`` at most this.
        max_decode_ratio: decoded bytes per uploaded byte, judged once the decoded arrays
            pass :data:`RATIO_FLOOR_BYTES`.
    """

    max_decoded_bytes: int = 1 << 30
    max_classes: int = 1000
    max_decode_ratio: float = 100.0


class DatasetFormatError(HwnasError, ValueError):
    """An upload that is not a valid dataset (the message names the array and the problem)."""


class DatasetTooLargeError(DatasetFormatError):
    """An upload whose arrays, as declared or once decoded, exceed the size limits."""


def size_text(n: float) -> str:
    """``n`` bytes for a person: 512 B, 4.5 KiB, 179 MiB, 2 GiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(n)} B" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def dims_text(shape: tuple[int, ...]) -> str:
    return " x ".join(str(d) for d in shape) if shape else "scalar"


def npy_header(f: IO[bytes]) -> tuple[tuple[int, ...], np.dtype[Any], int]:
    """Shape, dtype and header length of the ``.npy`` at the start of ``f`` (no data read).

    Raises:
        ValueError: not a C-ordered .npy of format 1.0 or 2.0.
    """
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:  # 3.0 only exists for structured dtypes with non-latin-1 field names
        raise ValueError(f".npy format version {version[0]}.{version[1]} (use np.savez)")
    if fortran and len(shape) > 1:
        raise ValueError("a Fortran-ordered array (save it C-ordered: np.ascontiguousarray)")
    return tuple(shape), dtype, f.tell()


def _members(zf: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, str]]:
    """The zip's members with their array names; refuses unknown, duplicate, encrypted or
    oddly compressed ones."""
    allowed = REQUIRED + OPTIONAL
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
    return list(zip(members, names, strict=True))


def check_zip(blob: bytes, limits: UploadLimits) -> None:
    """Refuse an upload from its zip directory and ``.npy`` headers, before decompressing it.

    zipfile never returns more than a member's declared ``file_size`` (a stream that inflates
    to more is cut there and fails its CRC), so once each declared size matches its header's
    shape and dtype, and the totals fit, reading the arrays stays within the limits.

    Raises:
        DatasetFormatError: not a zip, unknown or duplicate members, a header that is not a
            plain .npy array (object arrays and pickles), or a header that lies about its size.
        DatasetTooLargeError: the declared or decoded sizes exceed ``limits``.
    """
    limit = limits.max_decoded_bytes
    try:
        zf = zipfile.ZipFile(io.BytesIO(blob))
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise DatasetFormatError(f"not a readable .npz file: {e}") from None
    with zf:
        members = _members(zf)
        declared = sum(m.file_size for m, _ in members)
        if declared > limit:
            big = max((m for m, _ in members), key=lambda m: m.file_size)
            raise DatasetTooLargeError(
                f"{big.filename.removesuffix('.npy')}: {size_text(big.file_size)} uncompressed "
                f"({size_text(declared)} for all arrays), over the {size_text(limit)} limit"
            )
        decoded = 0
        sizes: dict[str, tuple[int, str]] = {}
        for m, name in members:
            try:
                with zf.open(m) as f:
                    shape, dtype, header = npy_header(f)
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
                    f"{dims_text(shape)} {dtype} = {header + count * dtype.itemsize} bytes; "
                    "not a valid .npy"
                )
            target = "float32" if name.startswith("x_") else "int64"
            size = count * np.dtype(target).itemsize
            sizes[name] = (size, f"{dims_text(shape)} {dtype}")
            decoded += size
            if decoded > limit:
                before = f" ({size_text(decoded)} with the arrays before it)"
                total = "" if decoded == size else before
                raise DatasetTooLargeError(
                    f"{name}: {dims_text(shape)} {dtype} = {size_text(size)} decoded as {target}"
                    f"{total}, over the {size_text(limit)} limit"
                )
    _check_ratio(sizes, decoded, len(blob), limits.max_decode_ratio)


def _check_ratio(
    sizes: dict[str, tuple[int, str]], decoded: int, uploaded: int, max_ratio: float
) -> None:
    if decoded <= RATIO_FLOOR_BYTES or decoded <= max_ratio * uploaded:
        return
    name, (size, what) = max(sizes.items(), key=lambda kv: kv[1][0])
    raise DatasetTooLargeError(
        f"{name}: {what} decodes to {size_text(size)} ({size_text(decoded)} for all arrays) "
        f"from a {size_text(uploaded)} upload, {decoded / max(uploaded, 1):.0f}x; the service "
        f"decodes at most {max_ratio:g}x the bytes uploaded (upload it less compressed, e.g. "
        "np.savez, or in parts)"
    )
