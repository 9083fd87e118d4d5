"""Stopping what a test started: a process and everything in its session."""

from __future__ import annotations

import os
import signal
import subprocess


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the process group of ``proc`` (started with ``start_new_session=True``), by its
    id: the process and its workers (TVM RPC servers fork one per session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)
