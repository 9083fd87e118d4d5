"""Reachability of hardware profiles: this CPU's architecture, CUDA GPUs, RPC trackers; cached."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import types
from collections.abc import Iterator

import pytest

from hw_profiles import Measure, Profile, get_profile, list_profiles
from workers.probe import reach


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    reach.clear_cache()
    yield
    reach.clear_cache()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _with(profile: Profile, **update: object) -> Profile:
    return profile.model_copy(update=update)


def test_this_cpu_is_reachable() -> None:
    ok, reason = reach.reachable(get_profile("x86/local"))
    if reach.host_arch() != "x86_64":
        pytest.skip(f"x86/local targets this host's CPU, which is {reach.host_arch()}")
    assert ok, reason
    assert reason == "this host's x86_64 CPU"


def test_other_architecture_via_local_is_not_reachable() -> None:
    triple = "riscv64-linux-gnu" if reach.host_arch() == "aarch64" else "aarch64-linux-gnu"
    arm = get_profile("arm/rasp4b64")
    ok, reason = reach.reachable(
        _with(arm, measure=Measure(), target={**arm.target, "mtriple": triple})
    )
    assert not ok
    assert (
        f"target '{triple}' is {triple.split('-')[0]} but this host is {reach.host_arch()}"
        in reason
    )
    assert "via rpc" in reason


@pytest.mark.parametrize("name", ["nvidia/h100", "nvidia/a100"])
def test_cuda_profile_without_a_gpu(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reach, "cuda_gpus", list)
    assert reach.reachable(get_profile(name)) == (False, "no CUDA GPU on this host")


def test_cuda_gpus_is_empty_without_device_files() -> None:
    if reach.glob.glob("/dev/nvidia[0-9]*"):
        pytest.skip("this host has NVIDIA device files")
    assert reach.cuda_gpus() == []


def test_cuda_profile_needs_its_compute_capability(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reach, "cuda_gpus", lambda: [("NVIDIA H100 80GB HBM3", "9.0")])
    ok, reason = reach.reachable(get_profile("nvidia/h100"))
    assert ok and reason == "CUDA GPU: NVIDIA H100 80GB HBM3 (compute capability 9.0)"
    ok, reason = reach.reachable(get_profile("nvidia/a100"))
    assert not ok
    assert reason == (
        "no GPU of compute capability 8.0 on this host (found NVIDIA H100 80GB HBM3 (9.0))"
    )


def test_nvidia_smi_failure_is_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> list[tuple[str, str]]:
        raise subprocess.TimeoutExpired("nvidia-smi", 5.0)

    monkeypatch.setattr(reach, "cuda_gpus", broken)
    ok, reason = reach.reachable(get_profile("nvidia/h100"))
    assert not ok and reason.startswith("no usable CUDA GPU on this host: ")
    assert "timed out" in reason


@pytest.mark.parametrize(
    ("arch", "cc"), [("sm_90", "9.0"), ("sm_90a", "9.0"), ("sm_80", "8.0"), ("sm_120", "12.0")]
)
def test_compute_capability(arch: str, cc: str) -> None:
    assert reach._compute_capability(arch) == cc


def test_other_local_gpu_kinds_are_refused() -> None:
    p = _with(get_profile("nvidia/h100"), target={"kind": "rocm"})
    assert reach.reachable(p) == (False, "local measurement on 'rocm' devices is not supported")


def test_results_are_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def check(profile: Profile) -> reach.Reach:
        calls.append(profile.name)
        return True, "fine"

    monkeypatch.setattr(reach, "_check", check)
    p = get_profile("x86/local")
    assert reach.reachable(p) == reach.reachable(p) == (True, "fine")
    assert calls == ["x86/local"]
    monkeypatch.setattr(reach, "TTL_S", 0.0)
    reach.reachable(p)
    assert calls == ["x86/local"] * 2
    monkeypatch.setattr(reach, "TTL_S", 30.0)
    reach.clear_cache()
    reach.reachable(p)
    assert calls == ["x86/local"] * 3


def test_reachability_names_every_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reach, "cuda_gpus", list)
    profiles = list_profiles()
    got = reach.reachability(profiles)
    assert list(got) == [p.name for p in profiles]
    assert got["nvidia/h100"] == (False, "no CUDA GPU on this host")
    assert reach.reachability([]) == {}


def _fake_rpc(monkeypatch: pytest.MonkeyPatch, fn: object) -> None:
    module = types.ModuleType("workers.probe.rpc")
    module.rpc_reachable = fn  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "workers.probe.rpc", module)


def test_rpc_goes_through_rpc_reachable(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[Measure, float]] = []

    def fake(measure: Measure, timeout_s: float = 2.0) -> tuple[bool, str]:
        seen.append((measure, timeout_s))
        return True, "tracker has it"

    _fake_rpc(monkeypatch, fake)
    p = get_profile("arm/rasp5")
    assert reach.reachable(p) == (True, "tracker has it")
    assert seen == [(p.measure, reach.RPC_TIMEOUT_S)]


def test_rpc_check_that_raises_is_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(measure: Measure, timeout_s: float = 2.0) -> tuple[bool, str]:
        raise ConnectionResetError("reset by peer")

    _fake_rpc(monkeypatch, boom)
    ok, reason = reach.reachable(get_profile("arm/rasp5"))
    assert not ok and reason == "RPC check failed: ConnectionResetError: reset by peer"


def test_rpc_without_the_rpc_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "workers.probe.rpc", None)
    ok, reason = reach.reachable(get_profile("arm/rasp5"))
    assert not ok and reason.startswith("RPC measurement is unavailable: ")


def test_closed_tracker_port_is_unreachable() -> None:
    pytest.importorskip("workers.probe.rpc", reason="workers/probe/rpc.py is not there yet")
    tracker = f"127.0.0.1:{_closed_port()}"
    p = _with(get_profile("arm/rasp4b64"), measure=Measure(via="rpc", tracker=tracker, key="k"))
    ok, reason = reach.reachable(p)
    assert not ok
    assert reason


def test_reachability_checks_concurrently_and_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def slow(profile: Profile) -> reach.Reach:
        calls.append(profile.name)
        time.sleep(0.3)
        return True, "fine"

    monkeypatch.setattr(reach, "_check", slow)
    profiles = [get_profile(n) for n in ("arm/rasp4b64", "arm/rasp5", "nvidia/h100")]
    t0 = time.monotonic()
    assert set(reach.reachability(profiles).values()) == {(True, "fine")}
    assert time.monotonic() - t0 < 0.8  # in parallel, not 3 x 0.3 s
    reach.reachability(profiles)
    assert sorted(calls) == sorted(p.name for p in profiles)  # the second call: all cached
