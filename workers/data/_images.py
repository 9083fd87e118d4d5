"""Image datasets the way users keep them: a zip of one folder per class (torchvision's
ImageFolder convention) of PNG / JPEG / BMP / WebP files.

``<class>/<image>`` takes 20 % of each class as the test split (seed 0) and leaves validation
to the job (10 % of train by its ``split_seed``); ``train/<class>/<image>``, ``test/...`` and
optionally ``val/...`` keep the user's own splits. One top folder around it all is skipped.
Classes are numbered in sorted name order. Every image is decoded, converted to RGB (or
grayscale, ``channels=1``), resized to the declared size (bilinear) and streamed to disk as
uint8 rows, so no whole array is ever held; training reads it back a batch at a time, scaled
to [0, 1]. A member that is not an image, a decompression bomb, a class without a training
image, or sizes past the limits are refused naming the member or the split.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from workers.data._npz import (
    RATIO_FLOOR_BYTES,
    DatasetFormatError,
    DatasetTooLargeError,
    UploadLimits,
    size_text,
)
from workers.data._stored import DatasetWriter

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SPLITS = ("train", "val", "test")
MAX_PIXELS = 16_000_000  # per image: larger ones are refused before they are decoded
MAX_MEMBER_BYTES = 64 << 20
TEST_FRACTION = 0.2


def is_image_zip(blob: bytes) -> bool:
    """A zip holding images and no ``.npy`` arrays."""
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            names = [n.lower() for n in zf.namelist()]
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    return any(n.endswith(EXTENSIONS) for n in names) and not any(n.endswith(".npy") for n in names)


def _layout(names: list[str]) -> dict[str, list[tuple[str, str]]]:
    """split -> [(member, class name)] from the folder layout (see the module doc)."""
    images = [n for n in names if n.lower().endswith(EXTENSIONS) and not n.endswith("/")]
    if not images:
        raise DatasetFormatError("the zip holds no .png / .jpg / .bmp / .webp images")
    parts = [n.split("/") for n in images]
    while (
        all(len(p) > 2 for p in parts)
        and len({p[0] for p in parts}) == 1
        and parts[0][0] not in SPLITS
    ):
        parts = [p[1:] for p in parts]  # one folder around everything
    depth = {len(p) for p in parts}
    if depth == {3} and {p[0] for p in parts} <= set(SPLITS):
        out: dict[str, list[tuple[str, str]]] = {}
        for name, p in zip(images, parts, strict=True):
            out.setdefault(p[0], []).append((name, p[1]))
        if "train" not in out or "test" not in out:
            raise DatasetFormatError("train/ and test/ folders both need images (val/ is optional)")
        return out
    if depth != {2}:
        bad = next(n for n, p in zip(images, parts, strict=True) if len(p) != 2)
        raise DatasetFormatError(
            f"{bad}: images go in one folder per class (<class>/<image>, or train/<class>/... "
            "and test/<class>/...)"
        )
    return {"train": [(n, p[0]) for n, p in zip(images, parts, strict=True)]}


def _split_test(members: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """20 % of each class (at least one where a class has two or more) as the test split."""
    rng = np.random.default_rng(0)
    by_class: dict[str, list[tuple[str, str]]] = {}
    for m in sorted(members):
        by_class.setdefault(m[1], []).append(m)
    train, test = [], []
    for items in by_class.values():
        order = rng.permutation(len(items))
        n_test = round(TEST_FRACTION * len(items)) if len(items) > 1 else 0
        n_test = max(n_test, 1) if len(items) > 1 else 0
        test += [items[i] for i in order[:n_test]]
        train += [items[i] for i in order[n_test:]]
    return {"train": sorted(train), "test": sorted(test)}


def _decode(zf: zipfile.ZipFile, name: str, size: tuple[int, int], channels: int) -> np.ndarray:
    from PIL import Image

    info = zf.getinfo(name)
    if info.file_size > MAX_MEMBER_BYTES:
        raise DatasetTooLargeError(
            f"{name}: {size_text(info.file_size)}, over {size_text(MAX_MEMBER_BYTES)}"
        )
    try:
        with zf.open(info) as f, Image.open(io.BytesIO(f.read())) as img:
            if img.width * img.height > MAX_PIXELS:
                raise DatasetTooLargeError(
                    f"{name}: {img.width} x {img.height} pixels, over {MAX_PIXELS}"
                )
            img.draft("RGB" if channels == 3 else "L", (size[1] * 2, size[0] * 2))
            pic = img.convert("RGB" if channels == 3 else "L").resize(
                (size[1], size[0]), Image.Resampling.BILINEAR
            )
            arr = np.asarray(pic, dtype=np.uint8)
    except DatasetFormatError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever Pillow says of a broken or hostile file
        raise DatasetFormatError(
            f"{name}: not a readable image ({type(e).__name__}: {e})"
        ) from None
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def save_image_folder(
    root: Path,
    name: str,
    blob: bytes,
    *,
    size: tuple[int, int],
    channels: int = 3,
    limits: UploadLimits | None = None,
) -> dict[str, Any]:
    """Decode an image-folder zip into ``root/<name>`` (uint8 rows) + ``<name>.json``.

    Raises:
        DatasetFormatError: a layout, member or class the module doc refuses
            (DatasetTooLargeError: over the size limits).
    """
    limits = limits or UploadLimits()
    if channels not in (1, 3):
        raise DatasetFormatError(f"channels: 1 (grayscale) or 3 (RGB), got {channels}")
    try:
        zf = zipfile.ZipFile(io.BytesIO(blob))
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise DatasetFormatError(f"not a readable zip: {e}") from None
    with zf:
        splits = _layout(zf.namelist())
        if set(splits) == {"train"}:
            splits = _split_test(splits["train"])
        classes = sorted({c for members in splits.values() for _, c in members})
        if len(classes) < 2:
            raise DatasetFormatError(f"train: {len(classes)} class folder(s); at least 2 needed")
        if len(classes) > limits.max_classes:
            raise DatasetFormatError(
                f"train: {len(classes)} class folders, over {limits.max_classes} "
                "(HWNAS_MAX_CLASSES)"
            )
        absent = sorted(set(classes) - {c for _, c in splits["train"]})
        if absent:
            raise DatasetFormatError(f"train: classes {absent[:10]} have no training image")
        rows = sum(len(m) for m in splits.values())
        row_bytes = channels * size[0] * size[1]
        decoded = rows * row_bytes
        if decoded > limits.max_decoded_bytes:
            raise DatasetTooLargeError(
                f"x_train: {rows} images of {channels} x {size[0]} x {size[1]} = "
                f"{size_text(decoded)}, over the {size_text(limits.max_decoded_bytes)} limit"
            )
        if decoded > RATIO_FLOOR_BYTES and decoded > limits.max_decode_ratio * len(blob):
            raise DatasetTooLargeError(
                f"x_train: {size_text(decoded)} of pixels from a {size_text(len(blob))} upload"
            )
        for split, members in splits.items():
            if len(members) < 10:
                raise DatasetFormatError(f"{split}: {len(members)} images; at least 10 needed")
        index = {c: i for i, c in enumerate(classes)}
        writer = DatasetWriter(root, name)
        try:
            for split, members in splits.items():
                with writer.rows(f"x_{split}", (len(members), channels, *size), np.uint8) as f:
                    for member, _ in members:
                        f.write(_decode(zf, member, size, channels).tobytes())
                writer.save(f"y_{split}", np.array([index[c] for _, c in members], np.int64))
            mode = "RGB" if channels == 3 else "grayscale"
            info = {
                "input_shape": [channels, *size],
                "num_classes": len(classes),
                "classes": classes,
                "sizes": {s: len(m) for s, m in splits.items()},
                "x_scale": 1 / 255,
                "x_range": [0.0, 1.0],
                "source": "image-folder zip",
                "preprocessing": f"decoded, converted to {mode}, resized to {size[0]}x{size[1]} "
                "(bilinear), pixels / 255",
            }
            writer.commit(info)
        except BaseException:
            writer.abort()
            raise
    return info
