"""dockerd and docker-compose for the stack test: start the daemon where it is not running
(and stop it by PID after), bring a compose project up and tear it down with its volumes."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _answers() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class Dockerd:
    """A docker daemon for the test: the running one, or one started here."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str | None:
        """None when docker answers; otherwise why it can't (the test is skipped with it)."""
        if shutil.which("docker") is None:
            return "no docker CLI (make setup installs Debian's docker.io as root)"
        if _answers():
            return None
        exe = shutil.which("dockerd")
        if exe is None:
            return "dockerd is not installed (Debian package docker.io)"
        if os.geteuid() != 0:
            return "dockerd is not running and starting it needs root"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [exe, "--host", "unix:///var/run/docker.sock"],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace").splitlines()[-5:]
                self.proc = None
                return f"dockerd exited at start: {' | '.join(tail)}"
            if _answers():
                return None
            time.sleep(1)
        self.stop()
        return "dockerd started but did not answer within 60 s"

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


class Stack:
    """One docker-compose project of the repository's compose file."""

    def __init__(self, project: str, env: dict[str, str]) -> None:
        self.project = project
        self.env = env

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        """docker-compose's stdout (raises when it fails and ``check``)."""
        done = self.run(*args, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(
                f"docker-compose {' '.join(args)} failed ({done.returncode}): {done.stderr[-3000:]}"
            )
        return done.stdout

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker-compose", "-p", self.project, "-f", str(REPO / "docker-compose.yml"), *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def logs(self, tail: int = 80) -> str:
        return self.compose("logs", "--no-color", f"--tail={tail}", check=False, timeout=120)

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", "--timeout", "20", check=False, timeout=300)
