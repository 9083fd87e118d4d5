"""Where a trial is now (``training epoch 3/6``, ``tuning 4/18 tasks``), for people watching.

The worker writes a small JSON file per trial, replaced atomically at each step, in the job's
artifact directory (shared storage on a cluster); the API reads it for running trials. Writing
is best effort: a full or read-only disk costs the progress line, never the trial.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
_current: ContextVar[Path | None] = ContextVar("hwnas_progress", default=None)


@contextlib.contextmanager
def reporting(path: str | Path | None) -> Iterator[None]:
    """Within the block, :func:`report` writes to ``path`` (None: reports go nowhere)."""
    token = _current.set(Path(path) if path else None)
    try:
        yield
    finally:
        _current.reset(token)


def current() -> str | None:
    """The file reports go to here (to hand to another process), or None."""
    path = _current.get()
    return str(path) if path is not None else None


def report(stage: str, step: int | None = None, steps: int | None = None, detail: str = "") -> None:
    """Record that the trial is at ``stage`` (step ``step`` of ``steps``, when counted)."""
    path = _current.get()
    if path is None:
        return
    text = stage if step is None or steps is None else f"{stage} {step}/{steps}"
    body = {
        "stage": stage,
        "step": step,
        "steps": steps,
        "text": f"{text} ({detail})" if detail else text,
        "at": time.time(),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(body))
        os.replace(tmp, path)
    except OSError as e:
        log.debug("progress %s not written: %s", path, e)
        with contextlib.suppress(OSError):
            tmp.unlink()


def read(path: str | Path) -> dict[str, Any] | None:
    """The last report in ``path``, or None (none yet, or unreadable)."""
    try:
        data: dict[str, Any] = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data
