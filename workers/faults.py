"""Named fault points, for the fault-injection suite (tests/faults, ``make bench-faults``).

``HWNAS_FAULT=<point>`` makes the process that reaches ``point(<point>)`` fail there, as a crash
would: no cleanup, no ``finally``. ``HWNAS_FAULT_MODE`` says how: ``self`` (default) SIGKILLs
the process, ``group`` its whole process group (a scheduler started in its own session, with
its embedded Ray: the box crashing while a trial is at that point), ``hang`` sleeps forever (a
trial that never returns). It fires once per ``HWNAS_FAULT_DIR`` (a marker file is created
atomically first), so a re-run of the same code (a Ray task's retry, the resumed scheduler)
goes on. Unset (always, outside the suite), a point costs one environment lookup.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)

POINTS = ("claim", "after_tell", "mid_export", "mid_probe", "mid_train")


def point(name: str) -> None:
    """Die here with SIGKILL when ``HWNAS_FAULT`` names this point (once per fault dir)."""
    if os.environ.get("HWNAS_FAULT") != name:
        return
    marks = Path(os.environ.get("HWNAS_FAULT_DIR") or "/tmp/hwnas-faults")
    marks.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(marks / f"{name}.fired", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    mode = os.environ.get("HWNAS_FAULT_MODE") or "self"
    log.warning("fault point %s (%s) in pid %d", name, mode, os.getpid())
    if mode == "hang":
        while True:
            time.sleep(3600)
    if mode == "group":  # the scheduler's group (its id travels to Ray's workers)
        os.killpg(int(os.environ.get("HWNAS_FAULT_PGID") or os.getpgid(0)), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
