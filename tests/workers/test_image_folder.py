"""Datasets the way users keep them: an image-folder zip decoded, resized and stored as uint8
rows, read back a batch at a time (never whole), scaled and normalized on the way; light
augmentation for fine-tuning."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from workers.data import DatasetFormatError, DatasetTooLargeError, load_splits, save_image_folder
from workers.data._rows import DiskRows
from workers.train import crop_flip

COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "emu": (30, 30, 200)}


def _png(colour: tuple[int, int, int], size: tuple[int, int] = (20, 24), fmt: str = "PNG") -> bytes:
    rng = np.random.default_rng(sum(colour))
    arr = np.clip(np.array(colour) + rng.integers(-20, 20, (*size, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _folder(per_class: int = 20, prefix: str = "photos/") -> bytes:
    return _zip(
        {
            f"{prefix}{c}/{i}.{'jpg' if i % 2 else 'png'}": _png(
                col, fmt="JPEG" if i % 2 else "PNG"
            )
            for c, col in COLOURS.items()
            for i in range(per_class)
        }
    )


def test_an_image_folder_becomes_a_dataset_read_from_disk(tmp_path: Path) -> None:
    info = save_image_folder(tmp_path, "pets", _folder(), size=(16, 12))
    assert info["classes"] == ["cat", "dog", "emu"] and info["input_shape"] == [3, 16, 12]
    assert info["sizes"] == {"train": 48, "test": 12}  # 20 % of each class held out
    assert "resized to 16x12 (bilinear), pixels / 255" in info["preprocessing"]
    stored = np.load(tmp_path / "pets" / "x_train.npy", mmap_mode="r")
    assert stored.dtype == np.uint8 and stored.shape == (48, 3, 16, 12)  # kept as uint8
    splits = load_splits("user/pets", 0, tmp_path)
    assert isinstance(splits.train.x, DiskRows)  # read a batch at a time
    assert len(splits.train) + len(splits.val) == 48 and len(splits.test) == 12
    batch = splits.train.x[np.array([3, 0, 3])]
    assert batch.dtype == np.float32 and batch.shape == (3, 3, 16, 12)
    assert 0.0 <= batch.min() and batch.max() <= 1.0
    red = splits.train.x[np.flatnonzero(splits.train.y == 0)][:, 0].mean()
    assert red > 0.6  # class 0 is "cat", the red one: labels follow sorted folder names


def test_explicit_splits_are_kept(tmp_path: Path) -> None:
    members = {
        f"{split}/{c}/{i}.png": _png(col)
        for split, n in (("train", 12), ("val", 10), ("test", 10))
        for c, col in list(COLOURS.items())[:2]
        for i in range(n // 2 if split != "train" else n)
    }
    info = save_image_folder(tmp_path, "s", _zip(members), size=(8, 8), channels=1)
    assert info["sizes"] == {"train": 24, "val": 10, "test": 10}
    assert info["input_shape"] == [1, 8, 8]
    splits = load_splits("user/s", 0, tmp_path)
    assert len(splits.val) == 10  # the user's own, not 10 % of train


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"a/readme.txt": b"hi"}, "holds no .png"),
        (
            {"cat/1.png": _png((1, 2, 3)), "x.png": _png((1, 2, 3))},
            "x.png: images go in one folder",
        ),
        (
            {**{f"cat/{i}.png": _png((9, 9, 9)) for i in range(30)}, "cat/bad.png": b"PNG? no"},
            "cat/bad.png: not a readable image",
        ),
        ({f"cat/{i}.png": _png((9, 9, 9)) for i in range(20)}, r"1 class folder\(s\)"),
    ],
    ids=["no-images", "mixed-depth", "corrupt", "one-class"],
)
def test_bad_folders_are_refused_naming_the_member(
    tmp_path: Path, members: dict[str, bytes], message: str
) -> None:
    if "cat/bad.png" in members:
        members = {**members, **{f"dog/{i}.png": _png((5, 5, 5)) for i in range(30)}}
    with pytest.raises(DatasetFormatError, match=message):
        save_image_folder(tmp_path, "bad", _zip(members), size=(8, 8))
    assert not (tmp_path / "bad.json").exists() and not list(tmp_path.glob(".bad*"))


def test_a_decompression_bomb_is_refused_before_it_is_decoded(tmp_path: Path) -> None:
    huge = io.BytesIO()
    Image.new("L", (6000, 6000)).save(huge, format="PNG")  # 36 M pixels in a few KB
    members = {f"{c}/{i}.png": _png(col) for c, col in COLOURS.items() for i in range(20)}
    members["cat/bomb.png"] = huge.getvalue()
    with pytest.raises(DatasetTooLargeError, match="cat/bomb.png: 6000 x 6000 pixels"):
        save_image_folder(tmp_path, "b", _zip(members), size=(8, 8))


def test_disk_rows_index_like_an_array(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (50, 2, 3, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", a)
    rows = DiskRows(tmp_path / "x.npy", scale=1 / 255)
    ref = a.astype(np.float32) / np.float32(255)
    idx = np.array([49, 0, 7, 7, 8, 9, 10, 3])
    assert np.allclose(rows[idx], ref[idx]) and np.allclose(rows[5:9], ref[5:9])
    assert np.allclose(rows[-1], ref[-1]) and len(rows) == 50 and rows.shape == (50, 2, 3, 3)
    view = rows.take(np.arange(10, 40)).take(np.array([0, 29]))
    assert np.allclose(view[np.array([1, 0])], ref[[39, 10]])
    mean = np.array([0.5, 0.25], np.float32).reshape(1, 2, 1, 1)
    std = np.array([2.0, 4.0], np.float32).reshape(1, 2, 1, 1)
    assert np.allclose(rows.normalized(mean, std)[:4], (ref[:4] - mean) / std)
    with pytest.raises(IndexError):
        rows[np.array([50])]


def test_crop_flip_shifts_and_mirrors_but_keeps_the_shape() -> None:
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    a = crop_flip(x, np.random.default_rng(0))
    b = crop_flip(x, np.random.default_rng(0))
    assert a.shape == x.shape and torch.equal(a, b)  # seeded: the same twice
    assert not torch.equal(a, x)
