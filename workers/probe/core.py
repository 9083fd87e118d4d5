"""Compile a compressed candidate with Apache TVM for a hardware profile and time it there.

The flow: :func:`~workers.probe.lowering.deployable` (int8 / fp16 / fp32 per layer) ->
Relax -> (CPU) MetaSchedule tasks, tune the ones without a record within the budget ->
probe-cache lookup -> compile (tuned database on CPU, default dlight schedules on GPU) ->
check numerics against the PyTorch fake-quant model -> time locally or over TVM RPC.

A CPU probe with a task still untuned is ``partial``: its number is kept (and labelled) but a
search must not treat it as final.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hw_profiles import Profile
from workers.probe import tuning
from workers.probe.cache import ProbeCache, cache_key, structure_hash, tensor_shapes
from workers.probe.errors import ProbeError
from workers.probe.lowering import deployable, to_relax
from workers.probe.measure import run_outputs, time_vm
from workers.probe.targets import device_of, is_gpu, resolve_target, tvm

MIN_ARGMAX_AGREEMENT = 0.99
# What the probe cache keeps: the measurement of a lowered structure (numerics are per model).
TIMING_FIELDS = (
    "median_ms",
    "iqr_ms",
    "cv",
    "min_ms",
    "max_ms",
    "repeat",
    "number",
    "remeasured",
    "measure_s",
    "remote_threads",
    "rpc",
)


@dataclass(frozen=True)
class ProbeOptions:
    """Where the shared state lives and how much tuning one probe may do.

    Attributes:
        tuning_root: MetaSchedule databases (one per profile / target / TVM version); None
            compiles CPU code with default schedules (``tuning = "untuned"``; not partial:
            no tuning was asked for, and such timings are cached under their own key).
        cache_dir: the probe cache; None measures every time.
        tune_budget_s: seconds this probe may spend tuning tasks with no record (0: none).
        settings: MetaSchedule knobs.
    """

    tuning_root: Path | None = None
    cache_dir: Path | None = None
    tune_budget_s: float = 0.0
    settings: tuning.TuneSettings = field(default_factory=tuning.TuneSettings)


def probe(
    model: nn.Module,
    example: torch.Tensor,
    profile: Profile,
    *,
    options: ProbeOptions = ProbeOptions(),
    check_inputs: torch.Tensor | None = None,
    library_path: Path | None = None,
) -> dict[str, Any]:
    """Lower, (tune), compile and time ``model`` on ``profile``.

    Args:
        model: the compressed network as PyTorch runs it (fake-quant activations included).
        example: one input (batch 1); the latency is for this shape.
        profile: where to compile for and measure.
        options: tuning database, cache and budget.
        check_inputs: a batch whose argmax the compiled graph must reproduce on >= 99%
            (default: ``example``).
        library_path: also export the compiled library there (cross-compiled for RPC targets).

    Returns:
        Stats: ``median_ms``, ``iqr_ms``, ``cv``, ``min_ms``, ``max_ms``, ``repeat``,
        ``number``, ``remeasured``, ``argmax_agreement``, ``max_abs_err``, ``precision``
        (layers per int8 / fp16 / fp32), ``tuning`` (``metaschedule``, ``untuned`` or
        ``default-gpu``), ``partial``, ``tasks``, ``untuned_tasks``, ``tune_s``,
        ``compile_s``, ``measure_s``, ``cache_hit``, ``structure``, ``tvm_version``,
        ``target``, ``threads``, ``via``.

    Raises:
        ProbeError: lowering, compiling or running failed, or the numerics check failed.
        ProbeTransientError: the remote device failed or stayed busy (not the candidate's
            fault).
    """
    t = tvm()
    try:
        dep, precision = deployable(model, profile)
        mod = to_relax(dep, example)
        target = resolve_target(profile)
        state = _tuning_state(mod, target, profile, options)
    except ProbeError:
        raise
    except Exception as e:  # TVM raises many types (TVMError, ValueError, ...)
        raise ProbeError(f"lowering for {profile.name} failed: {type(e).__name__}: {e}") from e
    structure = structure_hash(mod, tensor_shapes(dep))
    key = cache_key(
        structure,
        profile.name,
        str(target),
        t.__version__,
        state["digest"],
        profile.measure.model_dump_json(),
    )
    common = {
        "precision": precision,
        "structure": structure,
        "tvm_version": t.__version__,
        "target": str(target),
        "threads": profile.measure.threads,
        "via": profile.measure.via,
        "tuning": state["tuning"],
        "partial": state["partial"],
        "tasks": state["tasks"],
        "untuned_tasks": state["untuned_tasks"],
        "tune_s": state["tune_s"],
    }
    cache = ProbeCache(options.cache_dir) if options.cache_dir else None
    lock = cache.locked(key) if cache else contextlib.nullcontext()
    with lock:
        hit = cache.get(key) if cache else None
        if hit is not None and library_path is None:  # e.g. a pre-filter: timing only
            return {**hit, **common, "cache_hit": True, "numerics_checked": False}
        # A library is wanted (a job's bundle): compile and check this candidate's numerics;
        # on a hit the timing of the same lowered structure is reused, not measured again.
        stats = _compile_and_measure(
            model,
            mod,
            example,
            profile,
            target,
            state,
            check_inputs,
            library_path,
            time_it=hit is None,
        )
        if hit is not None:
            return {**stats, **hit, **common, "cache_hit": True}
        stats = {**stats, **common, "cache_hit": False}
        if cache is not None and not state["partial"]:
            cache.put(key, {k: stats[k] for k in TIMING_FIELDS if k in stats})
    return stats


def _tuning_state(mod: Any, target: Any, profile: Profile, opt: ProbeOptions) -> dict[str, Any]:
    """Extract tasks, tune the missing ones within budget; what the compiler will use."""
    if is_gpu(profile):
        return _state("default-gpu", None, [], [], 0.0, "default-gpu")
    if opt.tuning_root is None:
        return _state("untuned", None, [], [], 0.0, "untuned")
    path = tuning.db_dir(opt.tuning_root, profile, target)
    tasks = tuning.extract(tuning.fuse(mod, target), target)
    tune_s = 0.0
    with tuning.db_lock(path):
        db = tuning.open_db(path)
        todo = tuning.missing(tasks, db)
        if todo and opt.tune_budget_s > 0 and tuning.can_tune(profile):
            t0 = time.perf_counter()  # waiting for the lock is not this candidate's tuning
            tuning.tune(
                todo,
                db,
                path / "work",
                settings=opt.settings,
                budget_s=opt.tune_budget_s,
                profile=profile,
            )
            tune_s = time.perf_counter() - t0
            todo = tuning.missing(tasks, db)
        digest = tuning.records_digest(tasks, db)
    return _state("metaschedule", db, tasks, [x.task_name for x in todo], tune_s, digest)


def _state(
    kind: str, db: Any, tasks: list[Any], untuned: list[str], tune_s: float, digest: str
) -> dict[str, Any]:
    return {
        "tuning": kind,
        "db": db,
        "tasks": len(tasks),
        "untuned_tasks": untuned,
        "partial": bool(untuned),
        "tune_s": round(tune_s, 3),
        "digest": digest,
    }


def _compile_and_measure(
    model: nn.Module,
    mod: Any,
    example: torch.Tensor,
    profile: Profile,
    target: Any,
    state: dict[str, Any],
    check_inputs: torch.Tensor | None,
    library_path: Path | None,
    *,
    time_it: bool = True,
) -> dict[str, Any]:
    t = tvm()
    from tvm import relax

    batch = example if check_inputs is None else check_inputs
    singles = [batch[i : i + 1].numpy() for i in range(batch.shape[0])]
    if is_gpu(profile):  # CUDA source is compiled when the module is loaded on the GPU
        os.environ.setdefault("TVM_CUDA_COMPILE_MODE", "nvcc")
    try:
        t0 = time.perf_counter()
        if state["db"] is not None:
            ex = tuning.compile_tuned(mod, target, state["db"])
        else:
            mod = tuning.prepare(mod)
            ex = t.compile(mod, target=target, relax_pipeline=relax.get_default_pipeline(target))
        compile_s = time.perf_counter() - t0
        if library_path is not None:
            library_path.parent.mkdir(parents=True, exist_ok=True)
            ex.export_library(str(library_path), **_export_kwargs(profile))
        t1 = time.perf_counter()
        stats: dict[str, Any] = {}
        if profile.is_local:
            dev = device_of(profile)
            vm = relax.VirtualMachine(ex, dev)
            outputs = run_outputs(vm, dev, singles)
            if time_it:
                stats = time_vm(vm, dev, example.numpy(), profile.measure)
        elif time_it:
            outputs, stats = _measure_remote(ex, example, singles, profile, library_path)
        else:  # cached timing; checking numerics would need a board session: skipped
            return {"compile_s": round(time.perf_counter() - t0, 3), "numerics_checked": False}
        measure_s = time.perf_counter() - t1
    except ProbeError:
        raise
    except Exception as e:
        raise ProbeError(f"TVM probe on {profile.name} failed: {type(e).__name__}: {e}") from e
    with torch.no_grad():
        ref = model.eval()(batch).numpy()
    agree = float((outputs.argmax(1) == ref.argmax(1)).mean())
    if agree < MIN_ARGMAX_AGREEMENT:
        raise ProbeError(
            f"compiled graph for {profile.name} disagrees with PyTorch: argmax agreement "
            f"{agree:.3f} < {MIN_ARGMAX_AGREEMENT} on {len(singles)} inputs"
        )
    out = {
        **stats,
        "argmax_agreement": agree,
        "n_checked": len(singles),
        "numerics_checked": True,
        "max_abs_err": float(np.abs(outputs - ref).max()),
        "compile_s": round(compile_s, 3),
    }
    if time_it:
        out["measure_s"] = round(measure_s, 3)
    return out


def _export_kwargs(profile: Profile) -> dict[str, Any]:
    return {"cc": profile.cross_compiler} if profile.cross_compiler else {}


def _measure_remote(
    ex: Any,
    example: torch.Tensor,
    singles: list[np.ndarray],
    profile: Profile,
    library_path: Path | None,
) -> tuple[np.ndarray, dict[str, Any]]:
    from workers.probe.rpc import measure_remote

    with tempfile.TemporaryDirectory() as tmp:
        lib = library_path
        if lib is None:
            lib = Path(tmp) / f"probe-{os.getpid()}.so"
            ex.export_library(str(lib), **_export_kwargs(profile))
        r = measure_remote(lib, example.numpy(), singles, profile)
    return r["outputs"], {**r["stats"], "rpc": r.get("rpc"), "rpc_attempts": r.get("attempts")}
