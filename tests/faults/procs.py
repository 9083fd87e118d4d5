"""Processes of the fault-injection suite: schedulers (each with its embedded Ray) started as the
service runs them, stopped by PID with their whole tree; a private PostgreSQL restarted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
SCHEDULER = [sys.executable, "-m", "service.cli", "scheduler"]
HEARTBEAT_TIMEOUT_S = 4.0


class Scheduler:
    """``hwnas scheduler`` in its own process group, logging to ``log``."""

    def __init__(self, env: dict[str, str], log: Path, name: str) -> None:
        self.name = name
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                SCHEDULER,
                env={**env, "HWNAS_WORKER_ID": name},
                stdout=out,
                stderr=out,
                start_new_session=True,
                cwd=ROOT,
            )

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal_group(self, sig: int) -> None:
        """``sig`` to the scheduler, its Ray and Ray's workers (one process group)."""
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, sig: int = signal.SIGTERM, wait_s: float = 30) -> None:
        """:func:`stop_tree` (SIGSTOP: only the signal, the group stays stopped)."""
        if sig == signal.SIGSTOP:
            self.signal_group(sig)
            return
        stop_tree(self.proc, sig, wait_s)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.is_file() else ""


def stop_tree(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, wait_s: float = 30) -> None:
    """Signal ``proc``'s process group, wait, then SIGKILL whatever of its tree is left (Ray's
    processes that left the group included)."""
    try:
        tree = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        tree = [proc.pid]
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        pass
    for pid in tree:
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def wait_for(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)


def restart_postgres(data_dir: str, port: int, down_s: float = 3.0) -> None:
    """Stop the tests' private PostgreSQL (scripts/pg-private.sh), wait, start it again."""
    script = ROOT / "scripts" / "pg-private.sh"
    subprocess.run(["bash", str(script), "stop", data_dir], check=True, capture_output=True)
    time.sleep(down_s)
    subprocess.run(
        ["bash", str(script), "start", data_dir, str(port)], check=True, capture_output=True
    )
