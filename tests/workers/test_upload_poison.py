"""Uploads that would pass a shallow check but poison a worker: labels past any sensible class
count or wrapping in a cast, values that overflow float32, empty dimensions, and archives that
decode to far more than was uploaded. Each is refused naming the array; whatever is accepted
is something a model can train on (property test over generated .npz files)."""

from __future__ import annotations

import io
import tracemalloc
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workers.data import DatasetFormatError, DatasetTooLargeError, UploadLimits, validate_npz
from workers.data._npz import RATIO_FLOOR_BYTES

ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def _npz(compressed: bool = False, **arrays: Any) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


X = np.random.default_rng(0).random((60, 1, 8, 8), dtype=np.float32)
Y = np.arange(60) % 3

POISON: dict[str, tuple[dict[str, Any], str]] = {
    "label 2**40": (
        {"x_train": X, "y_train": np.where(Y == 2, 2**40, Y), "x_test": X, "y_test": Y},
        r"y_train: label 1099511627776 means at least 1099511627777 classes",
    ),
    "uint64 label 2**64-1": (
        {
            "x_train": X,
            "y_train": np.where(Y == 2, np.iinfo(np.uint64).max, Y).astype(np.uint64),
            "x_test": X,
            "y_test": Y,
        },
        r"y_train: label 18446744073709551615 means",
    ),
    "negative label": (
        {"x_train": X, "y_train": Y, "x_test": X, "y_test": np.where(Y == 1, -1, Y)},
        r"y_test: negative label -1",
    ),
    "float64 1e300": (
        {
            "x_train": np.where(X > 0.5, 1e300, X.astype(np.float64)),
            "y_train": Y,
            "x_test": X,
            "y_test": Y,
        },
        r"x_train: \d+ values are not finite as float32 .*float32's range \(largest \|x\| 1e\+300",
    ),
    "NaN": (
        {"x_train": X, "y_train": Y, "x_test": np.where(X > 0.9, np.nan, X), "y_test": Y},
        r"x_test: \d+ values are not finite as float32 .*NaN or infinity",
    ),
    "zero features": (
        {
            "x_train": np.zeros((60, 0), np.float32),
            "y_train": Y,
            "x_test": np.zeros((60, 0), np.float32),
            "y_test": Y,
        },
        r"x_train: shape \(60, 0\) has features = 0",
    ),
    "zero channels": (
        {
            "x_train": np.zeros((60, 0, 8, 8), np.float32),
            "y_train": Y,
            "x_test": np.zeros((60, 0, 8, 8), np.float32),
            "y_test": Y,
        },
        r"x_train: shape \(60, 0, 8, 8\) has channels = 0",
    ),
    "zero height and width": (
        {
            "x_train": np.zeros((60, 1, 0, 0), np.float32),
            "y_train": Y,
            "x_test": np.zeros((60, 1, 0, 0), np.float32),
            "y_test": Y,
        },
        r"x_train: shape \(60, 1, 0, 0\) has height and width = 0",
    ),
    "zero width, grayscale": (
        {
            "x_train": np.zeros((60, 8, 0), np.uint8),
            "y_train": Y,
            "x_test": np.zeros((60, 8, 0), np.uint8),
            "y_test": Y,
        },
        r"x_train: shape \(60, 8, 0\) has width = 0",
    ),
    "class without a training example": (
        {"x_train": X, "y_train": np.where(Y == 1, 2, Y), "x_test": X, "y_test": Y},
        r"y_train: 1 of classes 0 .. 2 have no training example \(1\)",
    ),
    "bool labels": (
        {"x_train": X, "y_train": Y.astype(bool), "x_test": X, "y_test": Y},
        r"y_train: need 60 integer labels, got bool",
    ),
}


@pytest.mark.parametrize("case", list(POISON))
def test_poison_is_refused_naming_the_array(case: str) -> None:
    arrays, message = POISON[case]
    with pytest.raises(DatasetFormatError, match=message):
        validate_npz(_npz(**arrays))


def test_the_class_bound_is_configurable() -> None:
    arrays = {"x_train": X, "y_train": np.arange(60) % 12, "x_test": X, "y_test": Y}
    _, info = validate_npz(_npz(**arrays))
    assert info["num_classes"] == 12
    with pytest.raises(DatasetFormatError, match=r"y_train: label 11 .*at most 10 classes"):
        validate_npz(_npz(**arrays), limits=UploadLimits(max_classes=10))


def test_an_archive_that_decodes_far_beyond_its_size_is_refused_before_decoding() -> None:
    rows = RATIO_FLOOR_BYTES // (32 * 32 * 4) + 1000  # just past the floor once decoded
    z = np.zeros((rows, 1, 32, 32), np.float32)
    blob = _npz(
        compressed=True,
        x_train=z,
        y_train=np.arange(rows) % 3,
        x_test=np.zeros((60, 1, 32, 32), np.float32),
        y_test=Y,
    )
    del z
    assert len(blob) < 1 << 20  # ~70 MB of zeros deflate to a few hundred KB
    tracemalloc.start()
    try:
        with pytest.raises(DatasetTooLargeError, match=r"x_train: .* decodes to .* at most 100x"):
            validate_npz(blob)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # judged from the headers: nothing was decompressed
    # the same arrays under the floor, or with a ratio limit above theirs, are fine
    validate_npz(blob, limits=UploadLimits(max_decode_ratio=10_000))


# ---------------------------------------------------------------------------- property
_X_DTYPES = st.sampled_from([np.float32, np.float64, np.uint8, np.float16, np.int32])
_Y_DTYPES = st.sampled_from([np.int8, np.uint8, np.int32, np.int64, np.uint64, np.float32, bool])
_SPECIAL = st.sampled_from([0.0, 1.0, -1.0, 1e300, -1e300, np.nan, np.inf, 3.4e38, 1e-45])
_LABEL = st.one_of(
    st.integers(0, 5), st.integers(-3, 2**40), st.sampled_from([2**63 - 1, 2**64 - 1, 255])
)


@st.composite
def _datasets(draw: st.DrawFn) -> dict[str, np.ndarray]:
    rows = draw(st.integers(8, 24))
    layout = draw(
        st.sampled_from([(3,), (0,), (2, 3), (0, 3), (1, 2, 2), (0, 2, 2), (1, 0, 3), (5, 2, 2)])
    )
    xdt, ydt = draw(_X_DTYPES), draw(_Y_DTYPES)
    out: dict[str, np.ndarray] = {}
    for part in ("train", "test") + (("val",) if draw(st.booleans()) else ()):
        n = rows if part == "train" else draw(st.integers(8, 16))
        x = np.asarray(
            draw(st.lists(_SPECIAL, min_size=1, max_size=4)) * (n * int(np.prod(layout)) + 1),
            dtype=np.float64,
        )[: n * int(np.prod(layout))].reshape(n, *layout)
        with np.errstate(all="ignore"):
            out[f"x_{part}"] = x.astype(xdt)
        labels = [draw(_LABEL) for _ in range(3)] + [i % 3 for i in range(n)]
        with np.errstate(all="ignore"):
            y = np.array([v % 2**64 for v in labels[:n]], dtype=np.uint64)
            out[f"y_{part}"] = y.astype(ydt) if ydt is not np.uint64 else y
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_datasets())
def test_what_is_accepted_is_trainable_and_what_is_refused_names_an_array(
    arrays: dict[str, np.ndarray],
) -> None:
    limits = UploadLimits(max_classes=50)
    try:
        stored, info = validate_npz(_npz(**arrays), limits=limits)
    except DatasetFormatError as e:
        assert any(str(e).startswith(f"{a}:") for a in ARRAYS), str(e)
        return
    classes = info["num_classes"]
    assert 2 <= classes <= limits.max_classes
    assert all(d >= 1 for d in info["input_shape"])
    for part in ("train", "val", "test"):
        if f"x_{part}" not in stored:
            continue
        x, y = stored[f"x_{part}"], stored[f"y_{part}"]
        assert x.dtype == np.float32 and np.isfinite(x).all()
        assert list(x.shape[1:]) == info["input_shape"]
        assert y.dtype == np.int64 and len(y) == len(x)
        assert y.min() >= 0 and y.max() < classes
        original = arrays[f"y_{part}"]
        assert np.array_equal(y, original.astype(np.int64))  # no label changed in the cast
    assert set(np.unique(stored["y_train"])) == set(range(classes))
