"""TVM targets and devices of hardware profiles."""

from __future__ import annotations

import os
from typing import Any

from hw_profiles import Profile
from hw_profiles.isa import host_isa


def tvm() -> Any:
    """``import tvm`` with the thread count set first (TVM reads it once, at import)."""
    os.environ.setdefault("TVM_NUM_THREADS", "1")
    import tvm as _tvm

    return _tvm


def resolve_target(profile: Profile) -> Any:
    """The ``tvm.target.Target`` of ``profile``; ``mcpu = "host"`` becomes this machine's CPU,
    and a CPU target without ``num-cores`` gets the profile's thread count (MetaSchedule needs
    it)."""
    t = tvm()
    spec = dict(profile.target)
    if spec.get("mcpu") == "host":
        spec["mcpu"] = t.target.codegen.llvm_get_system_cpu()
    if spec.get("kind") == "llvm":
        spec.setdefault("num-cores", profile.measure.threads)
    return t.target.Target(spec)


def is_gpu(profile: Profile) -> bool:
    return str(profile.target.get("kind")) in ("cuda", "rocm", "vulkan", "metal", "opencl")


def device_of(profile: Profile, session: Any = None) -> Any:
    """The TVM device to run on: local, or through an RPC ``session``."""
    t = tvm()
    gpu = is_gpu(profile)
    if session is not None:
        return session.cuda(0) if gpu else session.cpu(0)
    return t.cuda(0) if gpu else t.cpu(0)


def measuring_isa(profile: Profile) -> list[str]:
    """What to record of the CPU that runs ``profile``'s code: this host's architecture and
    flags for a local profile, the target's triple and ``mattr`` for a board."""
    if profile.is_local:
        return host_isa()
    triple = str(profile.target.get("mtriple", "unknown")).split("-")[0]
    mcpu = profile.target.get("mcpu")
    return [triple, *([f"mcpu={mcpu}"] if mcpu else []), *profile.target.get("mattr", [])]
