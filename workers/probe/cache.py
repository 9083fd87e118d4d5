"""Probe cache: one measurement per (lowered structure, profile, target, TVM, tuning state).

The key hashes the Relax module's text with every weight and scalar constant left out (ops,
shapes, dtypes, attributes only), so two candidates that lower to the same graph share a
measurement whatever their weight values. A per-key file lock makes concurrent probes of one
structure measure it once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_SCALAR = re.compile(r"R\.const\((-?[0-9.]+(?:e[-+]?[0-9]+)?|-?inf|nan)")
_PAD_VALUE = re.compile(r"pad_value=[^,)]+")


def structure_text(mod: Any) -> str:
    """The module's TVMScript without weights, scalar constants or pad values."""
    text = str(mod.script(show_meta=False))
    return _PAD_VALUE.sub("pad_value=#", _SCALAR.sub("R.const(#", text))


def structure_hash(mod: Any) -> str:
    return hashlib.sha256(structure_text(mod).encode()).hexdigest()[:20]


def cache_key(structure: str, *parts: str) -> str:
    """``structure`` (see :func:`structure_hash`) plus profile, target, TVM version, tuning
    state."""
    return hashlib.sha256("|".join((structure, *parts)).encode()).hexdigest()[:24]


class ProbeCache:
    """Measurements as JSON files under ``root`` (shared by every job on a host)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self._path(key).read_text())
        except (OSError, ValueError):
            return None
        return data

    def put(self, key: str, stats: dict[str, Any]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(stats, sort_keys=True))
        tmp.replace(path)

    @contextlib.contextmanager
    def locked(self, key: str) -> Iterator[None]:
        """Hold ``key`` while measuring it, so a concurrent probe waits and then hits."""
        path = self._path(key).with_suffix(".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
