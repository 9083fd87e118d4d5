"""Can this service measure on a hardware profile right now? Cheap checks, cached for ``TTL_S``.

* local CPU profile: the target's architecture (``mtriple``, default: this host) must be this
  host's; an aarch64 profile measured ``via = "local"`` on an x86-64 host is not reachable.
* local CUDA profile: a CUDA GPU of the target's compute capability (``arch = "sm_XY"``) must be
  present (``/dev/nvidia*`` and ``nvidia-smi``).
* RPC profile: ``workers.probe.rpc.rpc_reachable`` (the tracker answers and has the key).

Neither torch nor tvm is imported here: the API process asks this on every request.
"""

from __future__ import annotations

import glob
import platform
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from hw_profiles import Profile
from workers.probe.targets import is_gpu

TTL_S = 30.0
"""Seconds a result is reused (reachability is queried on every API call)."""

NVIDIA_SMI_TIMEOUT_S = 5.0
RPC_TIMEOUT_S = 2.0

Reach = tuple[bool, str]

_cache: dict[str, tuple[float, Reach]] = {}
_lock = threading.Lock()

_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "aarch64_be": "aarch64"}


def reachable(profile: Profile) -> Reach:
    """Whether ``profile`` can be measured from here, and why (or why not).

    Returns:
        ``(ok, reason)``: ``reason`` says what was found, e.g. ``"no CUDA GPU on this host"``.
    """
    hit = _cached(profile)
    if hit is not None:
        return hit
    result = _check(profile)
    with _lock:
        _cache[profile.model_dump_json()] = (time.monotonic(), result)
    return result


def reachability(profiles: Sequence[Profile]) -> dict[str, Reach]:
    """:func:`reachable` of several profiles by name; the uncached ones checked concurrently."""
    misses = [p for p in profiles if _cached(p) is None]
    if len(misses) > 1:
        with ThreadPoolExecutor(max_workers=min(8, len(misses))) as pool:
            list(pool.map(reachable, misses))
    return {p.name: reachable(p) for p in profiles}


def _cached(profile: Profile) -> Reach | None:
    with _lock:
        hit = _cache.get(profile.model_dump_json())
    if hit is None or time.monotonic() - hit[0] >= TTL_S:
        return None
    return hit[1]


def clear_cache() -> None:
    """Forget cached results (tests; after plugging a board in)."""
    with _lock:
        _cache.clear()


def _check(profile: Profile) -> Reach:
    if profile.measure.via == "rpc":
        return _rpc(profile)
    if not is_gpu(profile):
        return _local_cpu(profile)
    kind = str(profile.target.get("kind"))
    if kind != "cuda":
        return False, f"local measurement on {kind!r} devices is not supported"
    return _local_cuda(profile)


def _rpc(profile: Profile) -> Reach:
    try:
        from workers.probe.rpc import rpc_reachable
    except ImportError as e:
        return False, f"RPC measurement is unavailable: {e}"
    try:
        ok, reason = rpc_reachable(profile.measure, timeout_s=RPC_TIMEOUT_S)
    except Exception as e:  # a check must answer, never raise into the API
        return False, f"RPC check failed: {type(e).__name__}: {e}"
    return bool(ok), str(reason)


def host_arch() -> str:
    """This machine's CPU architecture in LLVM triple spelling (``x86_64``, ``aarch64``)."""
    machine = platform.machine().lower()
    return _ARCH_ALIASES.get(machine, machine)


def _local_cpu(profile: Profile) -> Reach:
    here = host_arch()
    triple = profile.target.get("mtriple")
    if not triple:
        return True, f"this host's {here} CPU"
    arch = str(triple).split("-", 1)[0].lower()
    arch = _ARCH_ALIASES.get(arch, arch)
    if arch != here:
        return False, (
            f"target {triple!r} is {arch} but this host is {here}: measure it via rpc on the device"
        )
    return True, f"this host's {here} CPU"


def _local_cuda(profile: Profile) -> Reach:
    try:
        gpus = cuda_gpus()
    except (OSError, subprocess.SubprocessError) as e:
        return False, f"no usable CUDA GPU on this host: {e}"
    if not gpus:
        return False, "no CUDA GPU on this host"
    want = _compute_capability(str(profile.target.get("arch", "")))
    found = ", ".join(f"{name} ({cc})" for name, cc in gpus)
    if want is None:
        return True, f"CUDA GPU: {found}"
    for name, cc in gpus:
        if cc == want:
            return True, f"CUDA GPU: {name} (compute capability {cc})"
    return False, f"no GPU of compute capability {want} on this host (found {found})"


def _compute_capability(arch: str) -> str | None:
    """``"sm_90"`` / ``"sm_90a"`` -> ``"9.0"``; anything else -> None."""
    m = re.fullmatch(r"sm_(\d+)(\d)[a-z]?", arch)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def cuda_gpus() -> list[tuple[str, str]]:
    """``(name, compute capability)`` of each NVIDIA GPU; empty without ``/dev/nvidia*``.

    Raises:
        FileNotFoundError: device files but no ``nvidia-smi``.
        subprocess.SubprocessError: ``nvidia-smi`` failed or timed out.
    """
    if not glob.glob("/dev/nvidia[0-9]*"):
        return []
    exe = shutil.which("nvidia-smi")
    if exe is None:
        raise FileNotFoundError("/dev/nvidia* exists but nvidia-smi is not on PATH")
    out = subprocess.run(
        [exe, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        timeout=NVIDIA_SMI_TIMEOUT_S,
        check=True,
    ).stdout
    gpus = []
    for line in out.splitlines():
        if "," in line:
            name, cc = line.rsplit(",", 1)
            gpus.append((name.strip(), cc.strip()))
    return gpus
