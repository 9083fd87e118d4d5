"""Compile a compressed PyTorch model with Apache TVM (Relax) and time it on a profile.

This probe lowers the compressed *structure* (pruned shapes, factorized layers, folded BN) as
float32 and runs TVM's default schedules: such latencies are labelled ``untuned`` and
``precision = "fp32-graph"`` in their stats. Integer kernels and MetaSchedule tuning belong to
the probe issue; the stats say which kind of number this is so nobody mistakes it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hw_profiles import Profile
from search_spaces import HwnasError
from workers.probe._stats import summarize


class ProbeError(HwnasError, RuntimeError):
    """Lowering, compiling or running a candidate with TVM failed."""


def _tvm() -> Any:
    os.environ.setdefault("TVM_NUM_THREADS", "1")
    import tvm

    return tvm


def resolve_target(profile: Profile) -> Any:
    """The ``tvm.target.Target`` of ``profile``; ``mcpu = "host"`` becomes this machine's CPU."""
    tvm = _tvm()
    spec = dict(profile.target)
    if spec.get("mcpu") == "host":
        spec["mcpu"] = tvm.target.codegen.llvm_get_system_cpu()
    return tvm.target.Target(spec)


def lower(model: nn.Module, example: torch.Tensor) -> Any:
    """torch.export the eval-mode model and import it into a Relax IRModule."""
    from tvm.relax.frontend.torch import from_exported_program

    with torch.no_grad():
        ep = torch.export.export(model.eval(), (example,))
    return from_exported_program(ep, unwrap_unit_return_tuple=True)


def compile_module(mod: Any, target: Any) -> Any:
    tvm = _tvm()
    from tvm import relax

    mod = relax.transform.DecomposeOpsForInference()(mod)
    return tvm.compile(mod, target=target, relax_pipeline=relax.get_default_pipeline(target))


def probe_latency(
    model: nn.Module,
    example: torch.Tensor,
    profile: Profile,
    *,
    library_path: Path | None = None,
) -> dict[str, Any]:
    """Compile ``model`` for ``profile``, check its numerics, and time it.

    Protocol: ``warmup`` calls, then ``time_evaluator(number, repeat)``; when the coefficient of
    variation exceeds ``max_cv`` it measures once more and keeps the steadier run.

    Returns:
        Stats: ``median_ms``, ``iqr_ms``, ``cv``, ``repeat``, ``number``, ``max_abs_err`` vs
        PyTorch, ``compile_s``, ``measure_s``, ``tvm_version``, ``target``, ``tuning``,
        ``precision``, ``remeasured``.

    Raises:
        ProbeError: lowering, compilation or execution failed, or the profile is not local.
    """
    if not profile.is_local:
        raise ProbeError(
            f"profile {profile.name!r} measures via {profile.measure.via!r}: not yet supported"
        )
    tvm = _tvm()
    from tvm import relax

    m = profile.measure
    try:
        t0 = time.perf_counter()
        target = resolve_target(profile)
        ex = compile_module(lower(model, example), target)
        compile_s = time.perf_counter() - t0
        if library_path is not None:
            library_path.parent.mkdir(parents=True, exist_ok=True)
            ex.export_library(str(library_path))
        dev = tvm.cpu()
        vm = relax.VirtualMachine(ex, dev)
        inp = tvm.runtime.tensor(example.numpy(), dev)
        out = vm["main"](inp).numpy()
        with torch.no_grad():
            ref = model(example).numpy()
        max_abs_err = float(np.abs(out - ref).max())
        t1 = time.perf_counter()
        for _ in range(m.warmup):
            vm["main"](inp)
        vm.save_function("main", "main_saved", inp)
        timer = vm.time_evaluator("main_saved", dev, number=m.number, repeat=m.repeat)
        stats = summarize(list(timer().results))
        remeasured = False
        if stats["cv"] > m.max_cv:
            again = summarize(list(timer().results))
            remeasured = True
            if again["cv"] < stats["cv"]:
                stats = again
        measure_s = time.perf_counter() - t1
    except ProbeError:
        raise
    except Exception as e:  # TVM raises many types (TVMError, ValueError, ...)
        raise ProbeError(f"TVM probe on {profile.name} failed: {type(e).__name__}: {e}") from e
    return {
        **stats,
        "number": m.number,
        "max_abs_err": max_abs_err,
        "compile_s": round(compile_s, 3),
        "measure_s": round(measure_s, 3),
        "tvm_version": tvm.__version__,
        "target": str(target),
        "threads": int(os.environ.get("TVM_NUM_THREADS", "0")),
        "tuning": "untuned",
        "precision": "fp32-graph",
        "remeasured": remeasured,
    }
