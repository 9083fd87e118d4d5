"""The node's timing lease: no training runs on this node's cores while a latency is timed.

A probe that times on this host takes the lease exclusively; every training step (a batch of
a parent's training, a fine-tune, QAT) holds a shared slot for its duration. Two lock files
make it writer-first, so a timing never starves behind a stream of batches:

- timing: ``gate`` exclusive, then ``room`` exclusive (waits for batches already running);
- a batch: ``gate`` shared and released at once (blocks while a timing waits or runs), then
  ``room`` shared for the batch.

A batch never holds ``room`` while it waits at the gate, so the two cannot deadlock. A timing
waits at most one batch per trial in flight. The files live in a node-local directory
(``HWNAS_LEASE_DIR``, default ``/tmp/hwnas-lease-<uid>``): the lease is per machine.

Only this node's own training is held. Other programs on the machine are not, and neither are
TVM compiles in other probe workers; the probe records what it held (``quiet``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)
LEASE_TIMEOUT_S = 300.0
"""Longest a timing waits for the node's training to pause (one batch each, normally ms)."""


def lease_dir() -> Path:
    return Path(os.environ.get("HWNAS_LEASE_DIR") or f"/tmp/hwnas-lease-{os.getuid()}")


def _open(name: str) -> IO[str]:
    d = lease_dir()
    d.mkdir(parents=True, exist_ok=True)
    return open(d / name, "a+")  # noqa: SIM115 - closed by the caller


def _lock(f: IO[str], mode: int, deadline: float | None) -> bool:
    """flock ``f``; with a ``deadline`` poll until then (False when it passes)."""
    if deadline is None:
        fcntl.flock(f, mode)
        return True
    while True:
        try:
            fcntl.flock(f, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)


@contextlib.contextmanager
def timing_lease(timeout_s: float = LEASE_TIMEOUT_S) -> Iterator[tuple[bool, float]]:
    """Hold the node's timing lease for the block; yields (held, seconds waited).

    ``held`` is False when training did not pause within ``timeout_s``: the caller times
    anyway and labels the number (``quiet = "none"``) rather than failing the probe.
    """
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    with _open("gate") as gate, _open("room") as room:
        held = _lock(gate, fcntl.LOCK_EX, deadline)
        held = held and _lock(room, fcntl.LOCK_EX, deadline)
        waited = time.monotonic() - t0
        if not held:
            log.warning("timing lease not granted within %.0f s: timing without it", timeout_s)
        try:
            yield held, waited
        finally:
            fcntl.flock(room, fcntl.LOCK_UN)
            fcntl.flock(gate, fcntl.LOCK_UN)


class ComputeSlots:
    """Shared slots for training steps: ``with slots.step(): <one batch>``.

    Opens the lock files once (per training run); each step costs three ``flock`` calls.
    """

    def __init__(self) -> None:
        self._gate = _open("gate")
        self._room = _open("room")

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        fcntl.flock(self._gate, fcntl.LOCK_SH)  # waits while a timing holds or awaits the lease
        fcntl.flock(self._gate, fcntl.LOCK_UN)
        fcntl.flock(self._room, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(self._room, fcntl.LOCK_UN)

    def close(self) -> None:
        self._gate.close()
        self._room.close()

    def __enter__(self) -> ComputeSlots:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
