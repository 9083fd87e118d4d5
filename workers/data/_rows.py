"""Samples read from disk a batch at a time, never loaded whole.

An uploaded dataset is stored as one ``.npy`` file per array (images as the uint8 they came
as). :class:`DiskRows` stands where an in-memory ``x`` array would: indexing it with a slice or
an index array reads just those rows with ``os.pread`` (into the page cache, not the process's
memory) and returns them as float32, scaled (uint8 pixels / 255) and normalized as asked. Views
(:meth:`DiskRows.take`, :meth:`DiskRows.normalized`) compose without reading anything, so
splits, subsets and an uploaded network's normalization cost no memory until a batch is read.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from workers.data._npz import npy_header


class DiskRows:
    """Rows of one ``.npy`` array on disk, as float32 (see the module doc).

    Args:
        path: the ``.npy`` file (C order, any numeric dtype).
        rows: which rows of the file, in order (None: all).
        scale: multiplied in (``1 / 255`` for uint8 pixels), then ``(x - mean) / std``.
    """

    def __init__(
        self,
        path: Path,
        rows: NDArray[np.int64] | None = None,
        scale: float = 1.0,
        mean: NDArray[np.float32] | None = None,
        std: NDArray[np.float32] | None = None,
    ) -> None:
        self.path = Path(path)
        with self.path.open("rb") as f:
            shape, dtype, self._offset = npy_header(f)
        self._file_shape = tuple(int(d) for d in shape)
        self._dtype = np.dtype(dtype)
        self._row_bytes = math.prod(self._file_shape[1:]) * self._dtype.itemsize
        self.rows = rows
        self.scale, self.mean, self.std = scale, mean, std

    # ------------------------------------------------------------------ array-like
    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self._file_shape[1:])

    @property
    def ndim(self) -> int:
        return len(self._file_shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(np.float32)

    def __len__(self) -> int:
        return self._file_shape[0] if self.rows is None else len(self.rows)

    def __getitem__(self, idx: Any) -> NDArray[np.float32]:
        if isinstance(idx, slice):
            picked = np.arange(len(self))[idx]
        elif isinstance(idx, int | np.integer):
            one: NDArray[np.float32] = self[np.asarray([int(idx)])][0]
            return one
        else:
            picked = np.asarray(idx, dtype=np.int64).reshape(-1)
            if picked.size and (picked.min() < -len(self) or picked.max() >= len(self)):
                raise IndexError(f"row index out of range for {len(self)} rows")
            picked = picked % max(len(self), 1)
        file_rows = picked if self.rows is None else self.rows[picked]
        return self._convert(self._read(file_rows))

    def __array__(self, dtype: Any = None, copy: Any = None) -> NDArray[Any]:
        out = self[slice(None)]  # every row: only where a caller asks for the whole array
        return out if dtype is None else out.astype(dtype)

    # ----------------------------------------------------------------------- views
    def take(self, rows: NDArray[np.int64]) -> DiskRows:
        """The rows ``rows`` of this view (nothing read)."""
        rows = np.asarray(rows, dtype=np.int64)
        base = rows if self.rows is None else self.rows[rows]
        return DiskRows(self.path, base, self.scale, self.mean, self.std)

    def normalized(self, mean: NDArray[np.float32], std: NDArray[np.float32]) -> DiskRows:
        """This view, then ``(x - mean) / std`` (broadcast over a batch's rows)."""
        return DiskRows(self.path, self.rows, self.scale, mean, std)

    # --------------------------------------------------------------------- reading
    def _read(self, file_rows: NDArray[np.int64]) -> NDArray[Any]:
        out = np.empty((len(file_rows), *self._file_shape[1:]), dtype=self._dtype)
        if not len(file_rows):
            return out
        order = np.argsort(file_rows, kind="stable")
        sorted_rows = file_rows[order]
        flat = out.reshape(len(file_rows), -1).view(np.uint8)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            i = 0
            while i < len(sorted_rows):  # one read per run of consecutive rows
                j = i + 1
                while j < len(sorted_rows) and sorted_rows[j] == sorted_rows[j - 1] + 1:
                    j += 1
                start = self._offset + int(sorted_rows[i]) * self._row_bytes
                want = (j - i) * self._row_bytes
                data = os.pread(fd, want, start)
                if len(data) != want:
                    raise OSError(f"{self.path}: short read ({len(data)} of {want} bytes)")
                block = np.frombuffer(data, dtype=np.uint8).reshape(j - i, self._row_bytes)
                flat[order[i:j]] = block
                i = j
        finally:
            os.close(fd)
        return out

    def _convert(self, raw: NDArray[Any]) -> NDArray[np.float32]:
        x = raw.astype(np.float32)
        if self.scale != 1.0:
            x *= np.float32(self.scale)
        if self.mean is not None and self.std is not None:
            x = (x - self.mean) / self.std
        return x.astype(np.float32, copy=False)


Rows = NDArray[np.float32] | DiskRows


def take(x: Rows, rows: NDArray[np.int64]) -> Rows:
    """``x[rows]``, without reading anything when ``x`` is on disk."""
    return x.take(rows) if isinstance(x, DiskRows) else x[rows]
