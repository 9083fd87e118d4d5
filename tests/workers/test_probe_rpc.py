"""Measuring over TVM RPC.

Against a real tracker and servers on 127.0.0.1 (``slow``: eight processes import TVM, ~20 s on
two shared cores): numerics and stats via tracker and direct host; a server killed mid-probe, a
session timeout and a busy key fail fast and say why; a library that does not load is the
candidate's fault. Without servers (fast): dead, silent and stalling addresses give up within
their bounds instead of hanging, and reachability checks answer within their timeout."""

from __future__ import annotations

import functools
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from hw_profiles import Measure, Profile
from tests.procs import kill_group
from workers.probe import rpc
from workers.probe.errors import ProbeBusyError, ProbeError, ProbeTransientError
from workers.probe.targets import resolve_target, tvm

KEY = "test"
START_DEADLINE_S = 90.0  # two shared cores: each process imports TVM (~3 s alone)


@dataclass(frozen=True)
class Env:
    tracker: int
    tracked: int  # a server registered at the tracker under KEY
    direct: int  # a server without tracker
    victim: int  # a server without tracker, for the test that kills it
    procs: dict[int, subprocess.Popen[bytes]]
    net: nn.Module  # the model, and its library exported for this CPU
    lib: Path


def _free_ports(n: int) -> list[int]:
    """``n`` distinct ports free now (all bound at once, then released)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _spawn(module: str, port: int, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TVM_NUM_THREADS": "1"}
    args = ["--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1), *extra]
    with log.open("wb") as out:  # its own session: stopping it stops its TVM workers too
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def _wait(ready: Callable[[], bool], what: str, log: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.2)
    pytest.fail(f"{what} not ready in {START_DEADLINE_S:g} s:\n{log.read_text()[-2000:]}")


def _listens(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _key_free(tracker: int) -> bool:
    ok, reason = rpc.rpc_reachable(_measure(tracker=f"127.0.0.1:{tracker}", key=KEY))
    return ok and "1 free" in reason


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """Tracker and servers, started while the test process compiles the model."""
    logs = tmp_path_factory.mktemp("rpc-logs")
    tracker, tracked, direct, victim = _free_ports(4)
    procs: dict[int, subprocess.Popen[bytes]] = {}
    tlog = logs / "tracked.log"
    deadline = time.monotonic() + START_DEADLINE_S

    def start_tracked() -> None:  # a server that finds no tracker retries only every 5 s
        while not _listens(tracker) and time.monotonic() < deadline:
            time.sleep(0.1)
        at = f"127.0.0.1:{tracker}"
        procs[tracked] = _spawn("tvm.exec.rpc_server", tracked, tlog, "--tracker", at, "--key", KEY)

    starter = threading.Thread(target=start_tracked, daemon=True)
    try:
        procs[tracker] = _spawn("tvm.exec.rpc_tracker", tracker, logs / "tracker.log")
        for port in (direct, victim):
            procs[port] = _spawn("tvm.exec.rpc_server", port, logs / f"{port}.log")
        starter.start()
        net, lib = _compile(tmp_path_factory.mktemp("rpc-lib") / "net.so")
        for port in (direct, victim):
            _wait(functools.partial(_listens, port), "server", logs / f"{port}.log", deadline)
        starter.join()
        _wait(lambda: _key_free(tracker), "tracked server", tlog, deadline)
        yield Env(tracker, tracked, direct, victim, procs, net, lib)
    finally:
        if starter.is_alive():
            starter.join()
        for proc in procs.values():
            kill_group(proc)


def _compile(lib: Path) -> tuple[nn.Module, Path]:
    """A small CNN and its library exported for this CPU (as the probe exports it)."""
    t = tvm()
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 5),
    ).eval()
    with torch.no_grad():
        ep = torch.export.export(net, (torch.zeros(1, 1, 6, 6),))
    mod = from_exported_program(ep, unwrap_unit_return_tuple=True)
    target = resolve_target(_profile(host="127.0.0.1:1"))
    ex = t.compile(
        relax.transform.DecomposeOpsForInference()(mod),
        target=target,
        relax_pipeline=relax.get_default_pipeline(target),
    )
    ex.export_library(str(lib))
    return net, lib


def _measure(**fields: Any) -> Measure:
    return _profile(**fields).measure


def _profile(**measure: Any) -> Profile:
    return Profile.model_validate(
        {
            "name": "test/rpc-cpu",
            "target": {"kind": "llvm"},
            "measure": {
                "via": "rpc",
                "session_timeout_s": 30,
                "warmup": 1,
                "number": 3,
                "repeat": 3,
                **measure,
            },
        }
    )


def _inputs(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal((1, 1, 6, 6)).astype(np.float32) for _ in range(n)]


# --- against a real tracker and servers ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("via", ["tracker", "direct"])
def test_measure_remote_matches_torch(env: Env, via: str) -> None:
    net, lib = env.net, env.lib
    if via == "tracker":
        profile = _profile(tracker=f"127.0.0.1:{env.tracker}", key=KEY, threads=1)
        address = f"tracker 127.0.0.1:{env.tracker} {KEY}"
    else:
        profile = _profile(host=f"127.0.0.1:{env.direct}")
        address = f"127.0.0.1:{env.direct}"
    checks = _inputs(3)

    r = rpc.measure_remote(lib, checks[0], checks, profile, busy_deadline_s=30)

    with torch.no_grad():
        ref = net(torch.from_numpy(np.concatenate(checks))).numpy()
    assert r["outputs"].shape == ref.shape == (3, 5)
    np.testing.assert_allclose(r["outputs"], ref, atol=1e-4, rtol=0)
    w = r["window"]
    stats = w.timing
    assert stats.median_ms > 0
    assert stats.min_ms <= stats.median_ms <= stats.max_ms
    assert stats.cv >= 0
    assert stats.repeat == profile.measure.repeat
    assert stats.number >= profile.measure.number
    assert w.quiet == "remote" and w.canary is None
    assert r["threads"] == 1
    assert r["attempts"] == 1
    assert r["rpc"] == address


@pytest.mark.slow
def test_server_killed_mid_probe_is_transient(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    lib = env.lib
    real_window = rpc.window

    def kill_then_time(*args: Any, **kwargs: Any) -> Any:  # the session is open: outputs done
        kill_group(env.procs[env.victim])
        return real_window(*args, **kwargs)

    monkeypatch.setattr(rpc, "window", kill_then_time)
    profile = _profile(host=f"127.0.0.1:{env.victim}")
    x = _inputs(1)
    t0 = time.monotonic()
    with pytest.raises(ProbeTransientError) as info:
        rpc.measure_remote(lib, x[0], x, profile, retries=2, busy_deadline_s=5)
    assert time.monotonic() - t0 < 20
    assert not isinstance(info.value, ProbeBusyError)
    message = str(info.value)
    assert "test/rpc-cpu" in message
    assert f"127.0.0.1:{env.victim}" in message
    assert "after 3 attempt(s)" in message
    assert "refused" in message.lower()  # the last attempt found nobody listening


@pytest.mark.slow
def test_session_timeout_is_transient(env: Env) -> None:
    lib = env.lib
    profile = _profile(  # ~10 s of timing against a 1 s session
        tracker=f"127.0.0.1:{env.tracker}",
        key=KEY,
        session_timeout_s=1,
        number=10_000,
        repeat=1000,
    )
    x = _inputs(1)
    t0 = time.monotonic()
    with pytest.raises(ProbeTransientError, match="timed out") as info:
        rpc.measure_remote(lib, x[0], x, profile, retries=0, busy_deadline_s=30)
    assert time.monotonic() - t0 < 15
    assert not isinstance(info.value, ProbeBusyError)
    assert "RPCSessionTimeoutError" in str(info.value)
    _wait(lambda: _key_free(env.tracker), "tracked server", Path("/dev/null"), t0 + 30)


@pytest.mark.slow
def test_busy_key_waits_then_gives_up(env: Env) -> None:
    lib = env.lib
    profile = _profile(tracker=f"127.0.0.1:{env.tracker}", key="nobody")
    x = _inputs(1)
    t0 = time.monotonic()
    with pytest.raises(ProbeBusyError) as info:
        rpc.measure_remote(lib, x[0], x, profile, busy_deadline_s=1.5)
    assert 1.4 < time.monotonic() - t0 < 10
    message = str(info.value)
    assert f"tracker 127.0.0.1:{env.tracker} nobody" in message
    assert "'nobody' has 0 servers" in message and KEY in message


@pytest.mark.slow
def test_library_that_does_not_load_is_the_candidates_fault(env: Env, tmp_path: Path) -> None:
    bad = tmp_path / "bad.so"
    bad.write_bytes(b"not a shared library")
    profile = _profile(host=f"127.0.0.1:{env.direct}")
    x = _inputs(1)
    with pytest.raises(ProbeError, match="loading the library failed") as info:
        rpc.measure_remote(bad, x[0], x, profile)
    assert not isinstance(info.value, ProbeTransientError)


@pytest.mark.slow
def test_rpc_reachable(env: Env) -> None:
    ok, reason = rpc.rpc_reachable(_measure(tracker=f"127.0.0.1:{env.tracker}", key=KEY))
    assert ok and f"'{KEY}' has 1 server(s)" in reason
    ok, reason = rpc.rpc_reachable(_measure(tracker=f"127.0.0.1:{env.tracker}", key="x"))
    assert not ok and "0 servers" in reason
    ok, reason = rpc.rpc_reachable(_measure(host=f"127.0.0.1:{env.direct}"))
    assert ok and "answers" in reason


# --- without servers: the library is never uploaded ---------------------------------------------


@pytest.fixture
def placeholder(tmp_path: Path) -> Path:
    lib = tmp_path / "never-uploaded.so"
    lib.write_bytes(b"")
    return lib


def test_rpc_reachable_dead_address() -> None:
    dead = _free_ports(1)[0]
    for m in (_measure(host=f"127.0.0.1:{dead}"), _measure(tracker=f"127.0.0.1:{dead}", key=KEY)):
        ok, reason = rpc.rpc_reachable(m, timeout_s=1.0)
        assert not ok and f"127.0.0.1:{dead}" in reason and "refused" in reason.lower()


@pytest.mark.parametrize("via", ["tracker", "direct"])
def test_dead_address_is_transient_after_retries(placeholder: Path, via: str) -> None:
    dead = f"127.0.0.1:{_free_ports(1)[0]}"
    profile = _profile(tracker=dead, key=KEY) if via == "tracker" else _profile(host=dead)
    x = _inputs(1)
    t0 = time.monotonic()
    with pytest.raises(ProbeTransientError) as info:
        rpc.measure_remote(placeholder, x[0], x, profile, retries=1)
    assert time.monotonic() - t0 < 5  # one 0.5 s backoff
    assert not isinstance(info.value, ProbeBusyError)
    message = str(info.value)
    assert "test/rpc-cpu" in message and dead in message and "after 2 attempt(s)" in message
    assert "refused" in message.lower()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (kernel backlog) but never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield int(s.getsockname()[1])


def test_silent_addresses_do_not_hang(silent_port: int, placeholder: Path) -> None:
    silent = f"127.0.0.1:{silent_port}"
    t0 = time.monotonic()
    ok, reason = rpc.rpc_reachable(_measure(tracker=silent, key=KEY), timeout_s=0.5)
    assert not ok and "did not answer within 0.5 s" in reason
    ok, reason = rpc.rpc_reachable(_measure(host=silent), timeout_s=0.5)
    assert ok and "busy" in reason
    assert time.monotonic() - t0 < 3

    x = _inputs(1)
    t0 = time.monotonic()
    with pytest.raises(ProbeBusyError, match="stays silent"):
        rpc.measure_remote(placeholder, x[0], x, _profile(host=silent), busy_deadline_s=0.5)
    assert time.monotonic() - t0 < 4


@pytest.fixture
def stalling_port() -> Iterator[int]:
    """A fake RPC server: it answers pings (the key mismatch a real server sends) but never
    completes a real handshake, like a server that wedges between a ping and the connect."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
                conn.settimeout(5)
                magic, size = struct.unpack("<ii", _recv_exact(conn, 8))
                key = _recv_exact(conn, size).decode()
            except OSError:
                return
            if key == "client:hwnas-ping":
                conn.sendall(struct.pack("<i", magic + 2))  # RPC_CODE_MISMATCH
                conn.close()
            else:
                held.append(conn)  # silent: the client's handshake waits

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
    listener.close()
    for conn in held:  # resets the abandoned handshakes, so their threads end
        conn.close()
    thread.join(timeout=5)


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionResetError
        data += chunk
    return data


def test_stalled_handshake_is_abandoned(
    stalling_port: int, placeholder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rpc, "CONNECT_TIMEOUT_S", 0.5)
    address = f"127.0.0.1:{stalling_port}"
    x = _inputs(1)
    t0 = time.monotonic()
    with pytest.raises(ProbeTransientError, match="no RPC handshake") as info:
        rpc.measure_remote(
            placeholder, x[0], x, _profile(host=address), retries=1, busy_deadline_s=2
        )
    assert time.monotonic() - t0 < 5
    assert address in str(info.value) and "after 2 attempt(s)" in str(info.value)


@pytest.mark.slow
def test_probe_tunes_and_measures_through_the_tracker(env: Env, tmp_path: Path) -> None:
    """The whole probe against a board behind a tracker: MetaSchedule's RPC runner tunes the
    candidate's tasks there, then the tuned library is measured over RPC."""
    from workers.probe import ProbeOptions, probe

    profile = _profile(tracker=f"127.0.0.1:{env.tracker}", key=KEY, threads=1)
    x = torch.from_numpy(np.concatenate(_inputs(32)))
    opts = ProbeOptions(tuning_root=tmp_path / "tuning", tune_budget_s=600)
    stats = probe(env.net, x[:1], profile, options=opts, check_inputs=x)
    assert stats.via == "rpc" and stats.rpc == f"tracker 127.0.0.1:{env.tracker} {KEY}"
    assert stats.tuning == "metaschedule" and stats.partial is False, stats.untuned_tasks
    assert stats.argmax_agreement == 1.0 and stats.median_ms > 0
    # the canary is timed on the board too, in the same rounds
    assert stats.quiet == "remote" and stats.canary_ms is not None and stats.normalized is not None


@pytest.mark.slow
def test_verification_times_model_dense_and_canary_on_the_board(env: Env) -> None:
    """The verification's protocol over RPC (as ``workers.probe.retime`` runs it for a board):
    several libraries uploaded to one session, timed in interleaved windows with the canary."""
    from workers.probe.canary import get_canary
    from workers.probe.targets import resolve_target

    profile = _profile(tracker=f"127.0.0.1:{env.tracker}", key=KEY, threads=1)
    canary = get_canary(profile, resolve_target(profile))  # built (tuned) by the test above
    x = _inputs(1)
    r = rpc.measure_remote(
        env.lib, x[0], [], profile, canary=canary.path, others=[(env.lib, x[0])], windows=2
    )
    assert len(r["windows"]) == 2 and all(len(w) == 3 for w in r["windows"])
    for model, same, canary_w in r["windows"]:
        assert model.quiet == "remote" and model.canary is not None
        assert model.normalized is not None and same.normalized is not None
        assert canary_w.normalized is None  # the canary is the reference
        # the same library twice in one window: the same normalized latency, within noise
        assert model.normalized == pytest.approx(same.normalized, rel=0.3)
