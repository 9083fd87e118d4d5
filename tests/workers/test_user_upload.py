"""Uploaded .npz datasets: zip bombs, lying headers and bad names are refused before any
array is decompressed or any path is built; grayscale (N, H, W) images are accepted."""

from __future__ import annotations

import io
import re
import struct
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from workers.data import (
    DatasetFormatError,
    DatasetTooLargeError,
    UnknownDatasetError,
    UploadLimits,
    get_dataset,
    load_splits,
    save_user_dataset,
    validate_npz,
)
from workers.data._user import NAME, load_user, user_info

GiB = 1 << 30
MiB = 1 << 20


def _npz(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _dataset(x_train: np.ndarray, x_test: np.ndarray, classes: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": x_train,
        "y_train": rng.integers(0, classes, len(x_train)),
        "x_test": x_test,
        "y_test": np.arange(len(x_test)) % classes,
    }


def _npy_header(shape: tuple[int, ...], dtype: str) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": dtype, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


def _crafted_zip(name: str, data: bytes, file_size: int) -> bytes:
    """A one-member deflate zip of ``data`` whose directory declares ``file_size`` bytes."""
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    comp = co.compress(data) + co.flush()
    fname = name.encode()
    sizes = (zlib.crc32(data), len(comp), file_size, len(fname))
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0x21, *sizes, 0)
    central = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0x21, *sizes, *[0] * 6)
    body = local + fname + comp
    cd = central + fname
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(cd), len(body), 0)
    return body + cd + end


def _peak_bytes(fn: Callable[[], object]) -> int:
    """Peak memory traced (Python and numpy buffers) while ``fn`` runs."""
    tracemalloc.start()
    try:
        fn()
    except DatasetFormatError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_zip_bomb_declaring_2_gib_is_refused_without_allocating_it() -> None:
    shape = (65536, 1, 64, 64)  # float64: 2 GiB
    header = _npy_header(shape, "<f8")
    declared = len(header) + 8 * int(np.prod(shape))
    blob = _crafted_zip("x_train.npy", header + bytes(4 * MiB), declared)
    assert len(blob) < 64 * 1024 and declared > 2 * GiB  # small zip, huge claim

    with pytest.raises(DatasetTooLargeError, match=r"x_train: 2 GiB uncompressed.*1 GiB limit"):
        validate_npz(blob)  # the default limit
    assert _peak_bytes(lambda: validate_npz(blob)) < 8 * MiB
    with pytest.raises(DatasetTooLargeError, match="over the 64 MiB limit"):
        validate_npz(blob, limits=UploadLimits(max_decoded_bytes=64 * MiB))


def test_too_large_is_a_format_error_and_nothing_is_stored(tmp_path: Path) -> None:
    blob = _npz(**_dataset(np.zeros((200, 16), np.float32), np.zeros((20, 16), np.float32)))
    with pytest.raises(DatasetFormatError, match="over the 10 KiB limit"):
        save_user_dataset(tmp_path, "big", blob, limits=UploadLimits(max_decoded_bytes=10 * 1024))
    assert not list(tmp_path.iterdir())
    assert save_user_dataset(tmp_path, "big", blob)["sizes"] == {"train": 200, "test": 20}


def test_uint8_images_small_compressed_but_over_the_limit_as_float32_are_refused() -> None:
    rng = np.random.default_rng(0)
    arrays = _dataset(
        rng.integers(0, 256, (200, 28, 28), dtype=np.uint8),
        rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
    )
    blob = _npz(**arrays)
    limit = 400_000  # the uint8 bytes fit (~175 kB), 200 x 28 x 28 float32 (627 kB) do not
    assert len(blob) < limit

    with pytest.raises(DatasetTooLargeError) as e:
        validate_npz(blob, limits=UploadLimits(max_decoded_bytes=limit))
    assert str(e.value) == (
        "x_train: 200 x 28 x 28 uint8 = 612 KiB decoded as float32, over the 391 KiB limit"
    )
    _, info = validate_npz(blob, limits=UploadLimits(max_decoded_bytes=1_000_000))  # fits more
    assert info["sizes"] == {"train": 200, "test": 20}


def test_decoded_sizes_add_up_across_arrays() -> None:
    arrays = _dataset(np.zeros((100, 10), np.float32), np.zeros((100, 10), np.float32))
    arrays["y_train"] = arrays["y_train"].astype(np.uint8)  # 100 B stored, 800 B as int64
    blob = _npz(**arrays)
    # x_train 4000 + y_train 800 + x_test 4000 + y_test 800 = 9600 bytes decoded
    validate_npz(blob, limits=UploadLimits(max_decoded_bytes=9600))
    with pytest.raises(DatasetTooLargeError, match=r"y_test: 100 int64 .* with the arrays before"):
        validate_npz(blob, limits=UploadLimits(max_decoded_bytes=9599))


@pytest.mark.parametrize(
    ("shape", "data_bytes"),
    [((100, 4), 100), ((100, 4), 1600 + MiB), ((65536, 1, 64, 64), 40)],
    ids=["truncated", "trailing-bytes", "header-claims-1-GiB"],
)
def test_member_whose_header_lies_about_its_size_is_refused(
    shape: tuple[int, ...], data_bytes: int
) -> None:
    header = _npy_header(shape, "<f4")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x_train.npy", header + bytes(data_bytes))
    blob = buf.getvalue()

    with pytest.raises(DatasetFormatError, match="x_train: the zip declares") as e:
        validate_npz(blob)
    assert not isinstance(e.value, DatasetTooLargeError)
    assert _peak_bytes(lambda: validate_npz(blob)) < 8 * MiB  # np.load would allocate shape


def test_stream_inflating_past_its_declared_size_is_cut_there_and_refused() -> None:
    header = _npy_header((20, 4), "<f4")
    small = header + bytes(320)
    # the zip says 448 bytes, as the header does, but the stream inflates to 64 MiB: zipfile
    # stops at 448 and the CRC (of the whole stream) does not match
    blob = _crafted_zip("x_train.npy", small + bytes(64 * MiB), len(small))
    with pytest.raises(DatasetFormatError, match="not a readable .npz file"):
        validate_npz(blob)
    assert _peak_bytes(lambda: validate_npz(blob)) < 8 * MiB


def test_too_many_members_are_refused() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in ("x_train", "y_train", "x_test", "y_test", "x_val", "y_val", "x_extra"):
            zf.writestr(f"{name}.npy", _npy_header((0,), "<f4"))
    with pytest.raises(DatasetFormatError, match="7 members in the zip; an .npz holds at most 6"):
        validate_npz(buf.getvalue())


@pytest.mark.parametrize(
    ("member", "named"), [("labels.npy", "labels"), ("x_train", "x_train"), ("a/x_test.npy", "a/")]
)
def test_unknown_members_are_named(member: str, named: str) -> None:
    arrays = _dataset(np.zeros((20, 4), np.float32), np.zeros((20, 4), np.float32))
    buf = io.BytesIO(_npz(**arrays))
    with zipfile.ZipFile(buf, "a") as zf:
        zf.writestr(member, _npy_header((0,), "<f4"))
    with pytest.raises(DatasetFormatError, match="unexpected arrays") as e:
        validate_npz(buf.getvalue())
    assert named in str(e.value) and "allowed" in str(e.value)


def test_lzma_members_are_refused_naming_the_compression() -> None:
    arrays = _dataset(np.zeros((20, 4), np.float32), np.zeros((20, 4), np.float32))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_LZMA) as zf:
        for k, v in arrays.items():
            with zf.open(f"{k}.npy", "w") as f:
                np.lib.format.write_array(f, v)
    with pytest.raises(DatasetFormatError, match="compression method 14"):
        validate_npz(buf.getvalue())


def test_object_arrays_are_still_refused() -> None:
    arrays: dict[str, Any] = _dataset(np.zeros((20, 4), np.float32), np.zeros((20, 4), np.float32))
    arrays["x_train"] = np.array([{"a": 1}] * 20, dtype=object)
    with pytest.raises(DatasetFormatError, match="object arrays are refused") as e:
        validate_npz(_npz(**arrays))
    assert "x_train" in str(e.value)


def test_grayscale_images_are_stored_as_one_channel(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (60, 6, 5), dtype=np.uint8)
    x_test = rng.integers(0, 256, (20, 1, 6, 5), dtype=np.uint8)  # mixes with (N, 1, H, W)
    info = save_user_dataset(tmp_path, "gray", _npz(**_dataset(x_train, x_test)))
    assert info["input_shape"] == [1, 6, 5]
    assert get_dataset("user/gray", tmp_path).input_shape == (1, 6, 5)

    splits = load_splits("user/gray", 0, tmp_path)
    assert splits.train.x.shape[1:] == (1, 6, 5) and splits.train.x.dtype == np.float32
    assert len(splits.train) + len(splits.val) == 60
    assert splits.train.index is not None and splits.val.index is not None
    rows = np.concatenate([splits.train.index, splits.val.index])
    together = np.concatenate([splits.train.x, splits.val.x])
    expected = (x_train[rows].astype(np.float32) / 255)[:, None]
    assert np.array_equal(together, expected)
    assert 0.0 <= together.min() and together.max() <= 1.0


def test_other_shapes_are_refused_naming_the_layouts() -> None:
    x = np.zeros((20, 2, 3, 4, 5), np.float32)
    with pytest.raises(DatasetFormatError, match=r"\(N, F\), \(N, H, W\) or \(N, C<=4, H, W\)"):
        validate_npz(_npz(**_dataset(x, x)))


BAD_NAMES = ["user/../../etc/passwd", "user/../evil", "user/A", "user/", "user/toy\n", "toy"]


@pytest.mark.parametrize("dataset", BAD_NAMES)
def test_bad_dataset_names_are_refused_before_any_path_is_built(
    tmp_path: Path, dataset: str
) -> None:
    arrays = _dataset(np.zeros((20, 4), np.float32), np.zeros((20, 4), np.float32), classes=2)
    save_user_dataset(tmp_path, "evil", _npz(**arrays))  # what user/../evil would reach
    root = tmp_path / "datasets"
    for read in (lambda: user_info(root, dataset), lambda: load_user(root, dataset, 0)):
        with pytest.raises(UnknownDatasetError, match=re.escape(NAME.pattern)):
            read()
    with pytest.raises(UnknownDatasetError):
        get_dataset(dataset, root)


def test_a_valid_name_that_was_not_uploaded_is_unknown(tmp_path: Path) -> None:
    with pytest.raises(UnknownDatasetError, match="upload it with POST /v1/datasets"):
        get_dataset("user/missing", tmp_path)
