"""How an uploaded dataset is kept: ``<root>/<name>/<array>.npy`` (images as the uint8 they came
as, features as float32) and ``<root>/<name>.json`` (its description, written last: a dataset
is known once its JSON exists). Workers read it back a batch at a time (:class:`DiskRows`), so
a dataset larger than a worker's memory trains all the same. Uploads from before this layout
(one ``<name>.npz``) are still read, whole.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from workers.data._registry import Split, Splits, stratified_split
from workers.data._rows import DiskRows


class DatasetWriter:
    """Writes a dataset into a temporary directory; :meth:`commit` puts it in place."""

    def __init__(self, root: Path, name: str) -> None:
        self.root, self.name = root, name
        root.mkdir(parents=True, exist_ok=True)
        self.tmp = root / f".{name}.{uuid.uuid4().hex}.tmp"
        self.tmp.mkdir()

    def save(self, array: str, value: np.ndarray) -> None:
        np.save(self.tmp / f"{array}.npy", np.ascontiguousarray(value), allow_pickle=False)

    @contextmanager
    def rows(self, array: str, shape: tuple[int, ...], dtype: Any) -> Iterator[IO[bytes]]:
        """A file to write ``shape[0]`` rows of ``dtype`` into, in order (streamed: no array
        of the whole is ever held)."""
        with (self.tmp / f"{array}.npy").open("wb") as f:
            np.lib.format.write_array_header_1_0(
                f,
                {
                    "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                    "fortran_order": False,
                    "shape": shape,
                },  # fmt: skip
            )
            yield f

    def commit(self, info: dict[str, Any]) -> None:
        final = self.root / self.name
        if final.exists():
            shutil.rmtree(final)
        os.replace(self.tmp, final)
        meta = self.root / f".{self.name}.{uuid.uuid4().hex}.json"
        meta.write_text(json.dumps({**info, "layout": "npy", "upload_id": uuid.uuid4().hex}))
        os.replace(meta, self.root / f"{self.name}.json")

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def load_stored(root: Path, name: str, seed: int, info: dict[str, Any]) -> Splits:
    """The splits of a stored dataset, x read from disk a batch at a time; without an ``x_val``
    the validation split is 10 % of train, stratified by ``seed``."""
    folder = root / name
    if not folder.is_dir():
        return _load_npz(root / f"{name}.npz", seed)
    scale = float(info.get("x_scale", 1.0))

    def part(p: str) -> tuple[DiskRows, np.ndarray]:
        y = np.load(folder / f"y_{p}.npy", allow_pickle=False)
        return DiskRows(folder / f"x_{p}.npy", scale=scale), y

    x, y = part("train")
    train = Split(x, y, np.arange(len(y)))
    if (folder / "x_val.npy").is_file():
        val = Split(*part("val"))
    else:
        train, val, _ = stratified_split(x, y, (0.1, 0.0), seed)
    xt, yt = part("test")
    return Splits(train, val, Split(xt, yt, np.arange(len(yt))), seed, str(info["preprocessing"]))


def _load_npz(path: Path, seed: int) -> Splits:
    """An upload kept before the .npy layout: one .npz of float32 arrays, read whole."""
    with np.load(path, allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    train = Split(a["x_train"], a["y_train"], np.arange(len(a["y_train"])))
    if "x_val" in a:
        val = Split(a["x_val"], a["y_val"])
    else:
        train, val, _ = stratified_split(a["x_train"], a["y_train"], (0.1, 0.0), seed)
    test = Split(a["x_test"], a["y_test"], np.arange(len(a["y_test"])))
    return Splits(train, val, test, seed, "uploaded arrays (uint8 / 255)")


def remove_stored(root: Path, name: str) -> None:
    """A deleted upload's files (the description first: without it the dataset is unknown)."""
    (root / f"{name}.json").unlink(missing_ok=True)
    (root / f"{name}.npz").unlink(missing_ok=True)
    shutil.rmtree(root / name, ignore_errors=True)
