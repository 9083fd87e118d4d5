"""An emulated aarch64 board for the ARM profiles: qemu-user runs an arm64 Python with the
aarch64 TVM wheel (``scripts/arm-board.sh`` builds it once, cached in ``HWNAS_ARM_BOARD_DIR``,
default ``~/.cache/hwnas/arm-board``), serving TVM RPC under the keys of both built-in ARM
profiles at a tracker on 127.0.0.1. One board for the tests of this package; everything it
starts is stopped by process group when they are done.

In CI (``CI`` set) a board that cannot be built or does not register fails the tests;
elsewhere (no root for apt, say) they skip, saying why.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hw_profiles import Profile, get_profile
from tests.procs import kill_group
from workers.probe import rpc

ROOT = Path(__file__).resolve().parents[2]
KEYS = ("rasp5", "rasp4b64")
BUILD_TIMEOUT_S = 900
REGISTER_DEADLINE_S = 300.0  # each emulated server imports TVM (~20 s alone, more side by side)


@dataclass(frozen=True)
class Board:
    tracker: str
    root: Path

    def profile(self, name: str) -> Profile:
        """The built-in ARM profile ``name`` pointed at this board, labelled emulated, with
        few timing rounds (emulated timings mean nothing; the code running is the point)."""
        p = get_profile(name)
        measure = p.measure.model_copy(
            update={
                "tracker": self.tracker,
                "emulated": True,
                "threads": 1,
                "warmup": 1,
                "number": 1,
                "repeat": 3,
                "min_repeat_ms": 0.0,
                "session_timeout_s": 600,
            }
        )
        return p.model_copy(update={"measure": measure})


def _give_up(msg: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"emulated ARM board: {msg}")
    pytest.skip(f"emulated ARM board: {msg}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:  # its own session: stopping it stops its workers too
        return subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def _registered(tracker: str, key: str) -> bool:
    profile = get_profile(f"arm/{key}")
    measure = profile.measure.model_copy(update={"tracker": tracker})
    ok, reason = rpc.rpc_reachable(measure)
    return ok and re.search(r"\b[1-9][0-9]* free\b", reason) is not None


def _build(root: Path, log: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    with log.open("wb") as out:
        try:
            done = subprocess.run(
                ["bash", str(ROOT / "scripts" / "arm-board.sh"), str(root)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=BUILD_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            _give_up(f"building {root} took over {BUILD_TIMEOUT_S} s (log {log})")
    if done.returncode != 0:
        _give_up(f"building {root} failed:\n{log.read_text()[-2000:]}")


@pytest.fixture(scope="package")  # stopped when tests/arm_board is done, not at session end
def arm_board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Board]:
    logs = tmp_path_factory.mktemp("arm-board")
    default = Path.home() / ".cache" / "hwnas" / "arm-board"
    root = Path(os.environ.get("HWNAS_ARM_BOARD_DIR", default))
    _build(root, logs / "build.log")
    port = _free_port()
    tracker = f"127.0.0.1:{port}"
    env = {**os.environ, "TVM_NUM_THREADS": "1"}
    procs = [
        _spawn(
            [
                sys.executable,
                "-m",
                "tvm.exec.rpc_tracker",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--port-end",
                str(port + 1),
            ],
            logs / "tracker.log",
            env,
        )
    ]
    board_env = {**env, "PYTHONPATH": str(root / "site")}
    try:
        time.sleep(1.0)
        for key in KEYS:
            p = _free_port()
            procs.append(
                _spawn(
                    [
                        str(root / "pyw"),
                        "-m",
                        "tvm.exec.rpc_server",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(p),
                        "--port-end",
                        str(p + 9),
                        "--tracker",
                        tracker,
                        "--key",
                        key,
                    ],
                    logs / f"{key}.log",
                    board_env,
                )
            )
        deadline = time.monotonic() + REGISTER_DEADLINE_S
        waiting = set(KEYS)
        while waiting and time.monotonic() < deadline:
            waiting = {k for k in waiting if not _registered(tracker, k)}
            time.sleep(2.0)
        if waiting:
            logs_text = "\n".join((logs / f"{k}.log").read_text()[-1500:] for k in waiting)
            _give_up(f"{sorted(waiting)} not registered in {REGISTER_DEADLINE_S:g} s:\n{logs_text}")
        yield Board(tracker, root)
    finally:
        for proc in procs:
            kill_group(proc)
