"""Keep a child process running: ``hwnas serve`` restarts its scheduler when it dies."""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Sequence

log = logging.getLogger(__name__)


class Supervisor:
    """Run ``argv`` and restart it whenever it exits, until :meth:`stop`.

    Restarts back off: ``min_delay_s``, doubling after each exit that came within
    ``stable_s`` of its start, up to ``max_delay_s``; a child that ran ``stable_s`` or longer
    restarts after ``min_delay_s`` again. Every exit and restart is logged.
    """

    def __init__(
        self,
        argv: Sequence[str],
        env: dict[str, str],
        *,
        name: str = "scheduler",
        min_delay_s: float = 1.0,
        max_delay_s: float = 60.0,
        stable_s: float = 60.0,
    ) -> None:
        self.argv, self.env, self.name = list(argv), env, name
        self.min_delay_s, self.max_delay_s, self.stable_s = min_delay_s, max_delay_s, stable_s
        self.restarts = 0
        self.delays: list[float] = []  # the pause before each restart
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.child = self._spawn()
        self._thread = threading.Thread(target=self._watch, name=f"supervise-{name}", daemon=True)
        self._thread.start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        self._started = time.monotonic()
        return subprocess.Popen(self.argv, env=self.env)

    def _watch(self) -> None:
        delay = self.min_delay_s
        while not self._stop.is_set():
            try:
                rc = self.child.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                continue
            if self._stop.is_set():
                return
            lived = time.monotonic() - self._started
            delay = self.min_delay_s if lived >= self.stable_s else delay
            self.delays.append(delay)
            log.error(
                "%s (pid %d) exited with %s after %.1f s; restarting in %.1f s",
                self.name,
                self.child.pid,
                rc,
                lived,
                delay,
            )
            if self._stop.wait(delay):
                return
            with self._lock:
                if self._stop.is_set():
                    return
                self.child = self._spawn()
                self.restarts += 1
            log.info("%s restarted (pid %d, restart %d)", self.name, self.child.pid, self.restarts)
            delay = min(self.max_delay_s, delay * 2)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop supervising, then stop the child (SIGTERM, SIGKILL after ``timeout_s``)."""
        with self._lock:
            self._stop.set()
        self._thread.join(timeout=5)
        if self.child.poll() is None:
            self.child.terminate()
            try:
                self.child.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.child.kill()
                self.child.wait()
