"""Profiles in the API: every profile listed with its reachability; jobs naming an unreachable
profile are refused with the reason; an RPC profile whose (live, local) tracker has the board is
accepted."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hw_profiles import RPC_TRACKER_ENV, Measure, get_profile
from tests.service.api import admin_client, api_settings
from workers.probe import reach

DEMO = json.loads((Path(__file__).resolve().parents[2] / "examples" / "demo-job.json").read_text())
SHIPPED = {"arm/rasp4b64", "arm/rasp5", "nvidia/a100", "nvidia/h100", "x86/local"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def no_gpu_no_tracker(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """No CUDA GPU, and the built-in ARM profiles pointed at a closed tracker port."""
    tracker = f"127.0.0.1:{_free_port()}"
    monkeypatch.setenv(RPC_TRACKER_ENV, tracker)
    monkeypatch.setattr(reach, "cuda_gpus", list)
    reach.clear_cache()
    yield tracker
    reach.clear_cache()


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with admin_client(api_settings(db_url, tmp_path)) as c:
        yield c


def _job(profile: str) -> dict[str, object]:
    return {**DEMO, "profiles": [profile], "objectives": ["accuracy", "latency", "size"]}


def test_profiles_list_reachability(client: TestClient, no_gpu_no_tracker: str) -> None:
    body = client.get("/v1/profiles").json()
    profiles = {p["name"]: p for p in body["data"]}
    assert SHIPPED <= set(profiles) and body["count"] == len(profiles)
    for p in profiles.values():
        assert isinstance(p["reachable"], bool) and isinstance(p["reason"], str) and p["reason"]
        assert {"target", "measure", "supports", "requires", "cross_compiler"} <= set(p)
    assert profiles["x86/local"]["reachable"] is (reach.host_arch() == "x86_64")
    for name in ("nvidia/h100", "nvidia/a100"):
        assert profiles[name]["reachable"] is False
        assert profiles[name]["reason"] == "no CUDA GPU on this host"
    for name in ("arm/rasp4b64", "arm/rasp5"):
        assert profiles[name]["reachable"] is False
        assert profiles[name]["measure"]["tracker"] == no_gpu_no_tracker
    assert profiles["arm/rasp5"]["target"]["mcpu"] == "cortex-a76"
    assert profiles["arm/rasp5"]["supports"]["int8_dot"] == "sdot"
    assert profiles["arm/rasp5"]["int8_dot_resolved"] == "sdot"
    assert profiles["arm/rasp4b64"]["int8_dot_resolved"] == "none"
    assert profiles["x86/local"]["int8_dot_resolved"] in ("vnni", "none")


@pytest.mark.parametrize("name", ["nvidia/h100", "arm/rasp4b64"])
def test_unreachable_profile_is_409_with_the_reason(
    client: TestClient, no_gpu_no_tracker: str, name: str
) -> None:
    """A well-formed spec whose device does not answer now: 409 (the state of the world, not
    the request, is at fault), naming the profile and why."""
    r = client.post("/v1/jobs", json={**_job("x86/local"), "profiles": ["x86/local", name]})
    assert r.status_code == 409, r.text
    detail = r.json()["detail"]
    expected = f"profiles[1]: profile '{name}' is not reachable now: "
    assert expected in detail
    reason = detail.split(expected, 1)[1]
    if name == "nvidia/h100":
        assert reason == "no CUDA GPU on this host"
    else:
        assert reason == reach.reachable(get_profile(name))[1]  # what GET /v1/profiles says
    assert client.get("/v1/jobs").json()["count"] == 0


def test_profile_demanding_an_instruction_this_cpu_lacks_is_422(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``int8_dot = "vnni"`` on a CPU without AVX-512 VNNI: refused at submit, naming the
    profile, the instruction and what the CPU has; nothing is stored."""
    from hw_profiles import isa

    root = tmp_path / "int8-profiles"
    (root / "lab").mkdir(parents=True)
    (root / "lab" / "vnni.toml").write_text(
        'schema_version = 1\nname = "lab/vnni"\n[target]\nkind = "llvm"\nmcpu = "host"\n'
        '[supports]\nint8_dot = "vnni"\n'
    )
    monkeypatch.setenv("HWNAS_PROFILE_DIR", str(root))
    monkeypatch.setattr(isa, "host_flags", lambda: frozenset({"avx2", "fma"}))
    r = client.post("/v1/jobs", json={**_job("x86/local"), "profiles": ["x86/local", "lab/vnni"]})
    assert r.status_code == 422, r.text
    detail = json.dumps(r.json())
    assert "lab/vnni demands int8_dot = 'vnni'" in detail and "lacks avx512_vnni" in detail
    assert "avx2" in detail and '"profiles", 1' in detail.replace("[", "").replace("]", "")
    assert client.get("/v1/jobs").json()["count"] == 0


# --- a live TVM RPC tracker with one server registered under a key -----------------------------


def _wait_for_key(
    measure: Measure, deadline_s: float, procs: list[subprocess.Popen[bytes]]
) -> None:
    from workers.probe.rpc import rpc_reachable

    end = time.monotonic() + deadline_s
    reason = ""
    while time.monotonic() < end:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{p.args} exited with {p.returncode}")
        ok, reason = rpc_reachable(measure, timeout_s=2.0)
        if ok:
            return
        time.sleep(0.3)
    raise TimeoutError(f"the RPC server never registered at the tracker: {reason}")


# rpc_server, started beside the tracker: import TVM first (~3 s), then wait for the tracker's
# port, so the server's first connection succeeds (a refused one retries only after 5 s)
_SERVER = """
import runpy, socket, sys, time
import tvm.rpc
host, port = sys.argv[sys.argv.index("--tracker") + 1].rsplit(":", 1)
end = time.monotonic() + 60
while time.monotonic() < end:
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        break
    except OSError:
        time.sleep(0.1)
sys.argv[0] = "rpc_server"
runpy.run_module("tvm.exec.rpc_server", run_name="__main__")
"""


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group led by ``proc`` (started with a new session), then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            continue
        with contextlib.suppress(ProcessLookupError):  # the leader is gone: its children too
            os.killpg(proc.pid, signal.SIGKILL)
        return


def _listen(port: int) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1), "--silent"]


@pytest.fixture(scope="module")
def live_tracker() -> Iterator[Measure]:
    """``python -m tvm.exec.rpc_tracker`` + one ``rpc_server`` registered as ``hwnas-test``."""
    pytest.importorskip("workers.probe.rpc", reason="workers/probe/rpc.py is not there yet")
    tracker_port, server_port = _free_port(), _free_port()
    measure = Measure(via="rpc", tracker=f"127.0.0.1:{tracker_port}", key="hwnas-test")
    commands = [
        [sys.executable, "-m", "tvm.exec.rpc_tracker", *_listen(tracker_port)],
        [sys.executable, "-c", _SERVER, *_listen(server_port)]
        + ["--tracker", str(measure.tracker), "--key", str(measure.key)],
    ]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for cmd in commands:
            # own session: tracker and server serve from a popen_worker child each, which
            # outlives a plain terminate(); stop each group by its leader's PID
            procs.append(
                subprocess.Popen(
                    cmd,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        _wait_for_key(measure, 60.0, procs)
        yield measure
    finally:
        for p in reversed(procs):
            _stop_group(p)


LAB_PROFILE = """\
schema_version = 1
name = "lab/pi"
requires = "the test's RPC server"
cross_compiler = "aarch64-linux-gnu-gcc"
[target]
kind = "llvm"
mtriple = "aarch64-linux-gnu"
[measure]
via = "rpc"
tracker = "{tracker}"
key = "{key}"
"""


@pytest.fixture
def lab_profile(
    live_tracker: Measure, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """``lab/pi`` (via the live tracker) and ``lab/gone`` (a key nobody serves) in a new dir."""
    root = tmp_path / "profiles"  # a new path: the loader's cache holds nothing for it
    (root / "lab").mkdir(parents=True)
    (root / "lab" / "pi.toml").write_text(
        LAB_PROFILE.format(tracker=live_tracker.tracker, key=live_tracker.key)
    )
    gone = LAB_PROFILE.format(tracker=live_tracker.tracker, key="nobody")
    (root / "lab" / "gone.toml").write_text(gone.replace("lab/pi", "lab/gone"))
    monkeypatch.setenv("HWNAS_PROFILE_DIR", str(root))
    reach.clear_cache()
    yield
    reach.clear_cache()


@pytest.mark.slow  # the live tracker: three TVM imports, 10-15 s on two busy cores
def test_reachable_rpc_profile_is_accepted(client: TestClient, lab_profile: None) -> None:
    listed = {p["name"]: p for p in client.get("/v1/profiles").json()["data"]}
    assert listed["lab/pi"]["reachable"] is True, listed["lab/pi"]
    assert listed["lab/gone"]["reachable"] is False
    r = client.post("/v1/jobs", json=_job("lab/pi"))
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["objectives"] == ["accuracy", "latency@lab/pi", "size"]
    r = client.post("/v1/jobs", json=_job("lab/gone"))
    assert r.status_code == 409
    assert "profiles[0]: profile 'lab/gone' is not reachable now: " in r.text
