"""An exclusive advisory file lock (several processes share tuning databases and the cache),
with a deadline: a holder that hangs (a stuck compile, a stopped process) makes the waiter fail
with :class:`LockTimeoutError` (a transient error, counted as a device failure) instead of
waiting forever. A holder that dies releases its ``flock`` with its file descriptor."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from workers.probe.errors import ProbeTransientError

LOCK_TIMEOUT_S = float(os.environ.get("HWNAS_LOCK_TIMEOUT_S") or 1800)


class LockTimeoutError(ProbeTransientError):
    """Another process held the lock past the deadline."""


@contextlib.contextmanager
def flocked(path: Path, timeout_s: float | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the ``with`` block,
    waiting at most ``timeout_s`` (default ``HWNAS_LOCK_TIMEOUT_S``, 1800 s) for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + (LOCK_TIMEOUT_S if timeout_s is None else timeout_s)
    pause = 0.005
    with open(path, "w") as f:
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeoutError(
                        f"{path} stayed locked by another process past the deadline"
                    ) from None
                time.sleep(pause)
                pause = min(0.5, pause * 2)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
