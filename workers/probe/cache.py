"""Probe cache: one measurement per (lowered structure, profile, target, TVM, tuning state).

The key hashes the Relax module's text with every weight and scalar constant left out (ops,
shapes, dtypes, attributes only), so two candidates that lower to the same graph share a
measurement whatever their weight values. A per-key file lock makes concurrent probes of one
structure measure it once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import uuid
from pathlib import Path
from typing import Any

from workers.probe._locks import flocked

log = logging.getLogger(__name__)

_SCALAR = re.compile(r"R\.const\((-?[0-9.]+(?:e[-+]?[0-9]+)?|-?inf|nan)")
_PAD_VALUE = re.compile(r"pad_value=[^,)]+")


def structure_text(mod: Any) -> str:
    """The module's TVMScript without weights, scalar constants or pad values."""
    text = str(mod.script(show_meta=False))
    return _PAD_VALUE.sub("pad_value=#", _SCALAR.sub("R.const(#", text))


def structure_hash(mod: Any, extra: str = "") -> str:
    """Hash of :func:`structure_text` plus ``extra`` (e.g. the constants' shapes)."""
    return hashlib.sha256((structure_text(mod) + "|" + extra).encode()).hexdigest()[:20]


def tensor_shapes(model: Any) -> str:
    """Every weight / buffer's shape and dtype of the (deployable) PyTorch model: the script
    leaves constants out, and e.g. a 3x3 and a 4x4 conv can give the same output shapes.
    Sorted by name: a layer whose parametrization was baked (QAT, clustering, a sparsity
    mask) re-registers its weight after its bias, which changes nothing that runs."""
    items = sorted(model.state_dict().items())
    return ";".join(f"{n}:{tuple(v.shape)}:{v.dtype}" for n, v in items)


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
        path = self._path(key)
        try:
            text = path.read_text()
        except OSError:
            return None
        try:
            data: dict[str, Any] = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError(f"a {type(data).__name__}, not an object")
        except ValueError as e:  # a torn or damaged entry: dropped, measured again
            log.warning("probe cache entry %s is corrupt (%s): dropped", path, e)
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # last use, for hwnas gc's least-recently-used order
        return data

    def put(self, key: str, stats: dict[str, Any]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")  # unique on every node
        tmp.write_text(json.dumps(stats, sort_keys=True))
        tmp.replace(path)

    def locked(self, key: str) -> contextlib.AbstractContextManager[None]:
        """Hold ``key`` while measuring it, so a concurrent probe waits and then hits."""
        return flocked(self._path(key).with_suffix(".lock"))
