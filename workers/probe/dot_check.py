"""Before a host's int8 kernels use a dot-product instruction, check that it runs here, exactly.

The first time a local profile resolves to ``vnni`` (or ``sdot`` on an ARM host), a fresh
process (``python -m workers.probe._dot_selfcheck PATH``) compiles a small int8 conv and dense
in the instruction's layout with the tensorized schedule this host would use, runs them and compares
with numpy's int32 arithmetic. A crash (an illegal instruction kills the process), a build error
or a wrong value means the path does not work on this host: the probe then builds plain int8
code and labels it (``int8_dot = "none"``, ``int8_dot_note`` saying why), never a silent
switch. The verdict is cached per host CPU, TVM version and path in
``~/.cache/hwnas/dot-check.json`` (``HWNAS_CANARY_DIR``'s parent when set).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from hw_profiles import Profile
from hw_profiles.isa import host_isa, resolve_int8_dot

TIMEOUT_S = 300


def _cache_file() -> Path:
    env = os.environ.get("HWNAS_CANARY_DIR")
    root = Path(env).parent if env else Path.home() / ".cache" / "hwnas"
    return root / "dot-check.json"


def _key(path: str) -> str:
    import tvm

    blob = f"{path}|{tvm.__version__}|{' '.join(host_isa())}|{_cpu_model()}"
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def dot_path_works(path: str, mcpu: str | None = None) -> tuple[bool, str]:
    """Whether ``path`` (``vnni`` / ``sdot``) builds, runs and computes exactly on this host;
    the reason when it does not. Cached. ``mcpu`` (tests): build for that CPU instead."""
    cache = _cache_file()
    key = _key(f"{path}|{mcpu}")
    try:
        known: dict[str, Any] = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return bool(known[key]["ok"]), str(known[key]["why"])
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "workers.probe._dot_selfcheck", path, *([mcpu] if mcpu else [])],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            env={**os.environ, "TVM_NUM_THREADS": "1"},
        )
        ok = proc.returncode == 0
        why = "checked: exact on a test conv and dense" if ok else _failure(path, proc)
    except subprocess.TimeoutExpired:
        ok, why = False, f"the {path} self-check did not finish in {TIMEOUT_S} s"
    known[key] = {"ok": ok, "why": why, "path": path, "isa": host_isa()}
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(known, indent=1))
    tmp.replace(cache)
    return ok, why


def _failure(path: str, proc: subprocess.CompletedProcess[str]) -> str:
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        what = "an illegal instruction" if sig == "SIGILL" else sig
        return f"the {path} self-check was killed by {what}: this CPU cannot run it"
    last = (proc.stderr or proc.stdout).strip().splitlines()
    return f"the {path} self-check failed on this CPU: {last[-1] if last else 'no output'}"


def usable_int8_dot(profile: Profile) -> tuple[str, str | None]:
    """The int8 dot-product path ``profile``'s int8 kernels are built with, and a note when it
    is not the one the profile resolves to (a local path that failed its self-check).

    Raises:
        Int8DotError: the profile demands an instruction the probing CPU lacks.
    """
    dot = resolve_int8_dot(profile)
    if dot == "none" or not profile.is_local:
        return dot, None
    ok, why = dot_path_works(dot)
    return (dot, None) if ok else ("none", why)


def self_check(path: str, mcpu: str | None = None) -> None:
    """Build, run and compare (in this process: the parent survives a crash). ``mcpu``
    (tests) builds for another CPU than this one."""
    import tvm
    from tvm import relax
    from tvm.script import relax as R

    from workers.probe import int8_dot
    from workers.probe.build import compile_fused
    from workers.probe.dot_defaults import dot_database
    from workers.probe.tuning import extract, fuse

    rng = np.random.default_rng(0)
    adt = int8_dot.act_dtype(path)
    lo, hi = (0, 256) if adt == "uint8" else (-128, 128)
    x = rng.integers(lo, hi, (1, 7, 9, 9)).astype(adt)
    w = rng.integers(-128, 128, (19, 7, 3, 3)).astype("int8")
    xd = rng.integers(lo, hi, (1, 37)).astype(adt)
    wd = rng.integers(-128, 128, (21, 37)).astype("int8")
    bb = relax.BlockBuilder()
    xv, xdv = relax.Var("x", R.Tensor(x.shape, adt)), relax.Var("xd", R.Tensor(xd.shape, adt))
    with bb.function("main", [xv, xdv]):
        with bb.dataflow():
            conv = int8_dot.emit_conv(bb, xv, relax.const(w), [1, 1], [1, 1], path)
            dense = int8_dot.emit_dense(bb, xdv, relax.const(wd), path)
            out = bb.emit_output(relax.Tuple([conv, dense]))
        bb.emit_func_output(out)
    cpu = mcpu or tvm.target.codegen.llvm_get_system_cpu()
    target = tvm.target.Target({"kind": "llvm", "mcpu": cpu, "num-cores": 1})
    fused = fuse(bb.get(), target)
    db, covered = dot_database(extract(fused, target), target)
    if len(covered) < 2:
        raise SystemExit(f"no tensorized {path} schedule for this CPU's target ({target})")
    vm = relax.VirtualMachine(compile_fused(fused, target, db), tvm.cpu(0))
    got = vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(xd))
    ref_conv = np.zeros((1, 19, 7, 7), dtype=np.int64)
    for i in range(3):
        for j in range(3):
            patch = x[0, :, i : i + 7, j : j + 7].astype(np.int64)
            ref_conv[0] += np.einsum("chw,oc->ohw", patch, w[:, :, i, j].astype(np.int64))
    ref_dense = xd.astype(np.int64) @ wd.astype(np.int64).T
    if not np.array_equal(got[0].numpy(), ref_conv) or not np.array_equal(
        got[1].numpy(), ref_dense
    ):
        raise SystemExit(f"the {path} kernels computed wrong values on this CPU")
