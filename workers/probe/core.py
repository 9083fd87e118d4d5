"""Compile a compressed candidate with Apache TVM for a hardware profile and time it there.

The flow: :func:`~workers.probe.lowering.deployable` (int8 / fp16 / fp32 per layer) ->
Relax -> (CPU) MetaSchedule tasks, tune the ones without a record within the budget ->
probe-cache lookup -> compile (tuned database on CPU, default dlight schedules on GPU) ->
check numerics against the PyTorch fake-quant model -> time locally (holding the node's timing
lease) or over TVM RPC, interleaved with the profile's canary.

A probe that ships a library (a trained candidate's bundle) always times that library; a probe
without one (the pre-filter of an untrained structure) may answer from the probe cache, and
says so (``latency_source = "cache"``). A CPU probe with a task still untuned is ``partial``:
its number is kept (and labelled) but a search must not treat it as final.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hw_profiles import Profile
from workers.lease import timing_lease
from workers.probe import tuning
from workers.probe.build import TuningState, compile_module, export_library, tuning_state
from workers.probe.cache import ProbeCache, cache_key, structure_hash, tensor_shapes
from workers.probe.canary import Canary, canary_beside, canary_input, get_canary
from workers.probe.dot_check import usable_int8_dot
from workers.probe.errors import ProbeError
from workers.probe.finish import keep_for_finishing
from workers.probe.lowering import deployable, to_relax
from workers.probe.measure import load_vm, local_vm, run_outputs
from workers.probe.targets import device_of, measuring_isa, resolve_target, tvm
from workers.probe.timing import prepare, window
from workers.records import ProbeStats, Window

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
    "canary_ms",
    "canary_iqr_ms",
    "normalized",
    "normalized_iqr",
    "quiet",
    "lease_wait_s",
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
        progress_path: where the probe reports its stage (tuning k/n tasks), or None.
    """

    tuning_root: Path | None = None
    cache_dir: Path | None = None
    tune_budget_s: float = 0.0
    settings: tuning.TuneSettings = field(default_factory=tuning.TuneSettings)
    progress_path: str | None = None  # the trial's progress file (:mod:`workers.progress`)


def probe(
    model: nn.Module,
    example: torch.Tensor,
    profile: Profile,
    *,
    options: ProbeOptions = ProbeOptions(),
    check_inputs: torch.Tensor | None = None,
    library_path: Path | None = None,
) -> ProbeStats:
    """Lower, (tune), compile and time ``model`` on ``profile``.

    Args:
        model: the compressed network as PyTorch runs it (fake-quant activations included).
        example: one input (batch 1); the latency is for this shape.
        profile: where to compile for and measure.
        options: tuning database, cache and budget.
        check_inputs: a batch whose argmax the compiled graph must reproduce on >= 99%
            (default: ``example``).
        library_path: also export the compiled library there (cross-compiled for RPC
            targets), with the profile's canary beside it (``<stem>.canary.so``).

    Raises:
        ProbeError: lowering, compiling or running failed, or the numerics check failed.
        ProbeTransientError: the remote device failed or stayed busy (not the candidate's
            fault).
        TuningUnavailableError: tuning was asked for and its cost model can't be built.
    """
    t = tvm()
    try:
        dep, precision = deployable(model, profile)
        dot, dot_note = usable_int8_dot(profile)
        mod = to_relax(dep, example, int8_dot_path=dot)
        target = resolve_target(profile)
        state = tuning_state(
            mod, target, profile, options.tuning_root, options.tune_budget_s, options.settings
        )
        canary = get_canary(profile, target)
    except ProbeError:
        raise
    except Exception as e:  # TVM raises many types (TVMError, ValueError, ...)
        if type(e).__name__ == "TuningUnavailableError":
            raise
        raise ProbeError(f"lowering for {profile.name} failed: {type(e).__name__}: {e}") from e
    structure = structure_hash(mod, tensor_shapes(dep))
    key = cache_key(
        structure,
        profile.name,
        str(target),
        t.__version__,
        state.digest,
        profile.measure.model_dump_json(),
        canary.id,
    )
    common: dict[str, Any] = {
        "precision": precision,
        "structure": structure,
        "tvm_version": t.__version__,
        "target": str(target),
        "threads": profile.measure.threads,
        "via": profile.measure.via,
        "tuning": state.kind,
        "cost_model": state.cost_model,
        "partial": state.partial,
        "tasks": len(state.tasks),
        "tasks_found_tuned": state.found_tuned,
        "untuned_tasks": state.untuned,
        "tune_s": state.tune_s,
        "canary_id": canary.id,
        "int8_dot": dot,
        "int8_dot_note": dot_note,
        "isa": measuring_isa(profile),
        "emulated": profile.measure.emulated,
    }
    cache = ProbeCache(options.cache_dir) if options.cache_dir else None
    lock = cache.locked(key) if cache else contextlib.nullcontext()
    with lock:
        hit = cache.get(key) if cache else None
        if hit is not None and library_path is None:  # e.g. a pre-filter: timing only
            return ProbeStats(**hit, **common, cache_hit=True, latency_source="cache")
        # A library is wanted (a job's bundle): it is compiled, checked and timed itself.
        run = _compile_check_time(
            model, mod, example, profile, target, state, canary, check_inputs, library_path
        )
        if library_path is not None and state.partial:  # verification may finish its tuning
            batch = example if check_inputs is None else check_inputs
            with torch.no_grad():
                ref = model.eval()(batch).numpy()
            keep_for_finishing(library_path, mod, batch.numpy(), ref)
        stats = ProbeStats(
            **run.timing_fields(), **run.numerics, **common, cache_hit=hit is not None
        )
        if cache is not None and not state.partial:
            cache.put(key, {k: v for k, v in run.timing_fields().items() if k in TIMING_FIELDS})
    return stats


@dataclass
class _Run:
    window: Window
    numerics: dict[str, Any]
    compile_s: float
    measure_s: float
    remote: dict[str, Any]

    def timing_fields(self) -> dict[str, Any]:
        w = self.window
        return {
            **w.timing.model_dump(),
            "remeasured": w.remeasured,
            "canary_ms": w.canary.median_ms if w.canary else None,
            "canary_iqr_ms": w.canary.iqr_ms if w.canary else None,
            "normalized": w.normalized,
            "normalized_iqr": w.normalized_iqr,
            "quiet": w.quiet,
            "lease_wait_s": w.lease_wait_s,
            "compile_s": round(self.compile_s, 3),
            "measure_s": round(self.measure_s, 3),
            **self.remote,
        }


def _compile_check_time(
    model: nn.Module,
    mod: Any,
    example: torch.Tensor,
    profile: Profile,
    target: Any,
    state: TuningState,
    canary: Canary,
    check_inputs: torch.Tensor | None = None,
    library_path: Path | None = None,
) -> _Run:
    """Compile, check and time; with ``library_path`` the library is exported there first
    (with the profile's canary beside it, ``<stem>.canary.so``) and that file is what runs:
    the shipped file is the timed one, and its code is generated once, not JIT-compiled
    again for the VM."""
    from tvm import relax

    batch = example if check_inputs is None else check_inputs
    singles = [batch[i : i + 1].numpy() for i in range(batch.shape[0])]
    try:
        t0 = time.perf_counter()
        ex = compile_module(mod, target, profile, state)
        if library_path is not None:
            export_library(ex, library_path, profile)
            canary_beside(library_path).write_bytes(canary.path.read_bytes())
        compile_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        remote: dict[str, Any] = {}
        if profile.is_local:
            dev = device_of(profile)
            if library_path is None:
                vm = relax.VirtualMachine(ex, dev)
            else:
                vm = load_vm(library_path, dev)
            outputs = run_outputs(vm, dev, singles)
            w = time_local(vm, local_vm(canary.path, dev), example.numpy(), profile)
        else:
            outputs, w, remote = _measure_remote(
                ex, example, singles, profile, canary, library_path
            )
        measure_s = time.perf_counter() - t1
    except ProbeError:
        raise
    except Exception as e:
        raise ProbeError(f"TVM probe on {profile.name} failed: {type(e).__name__}: {e}") from e
    try:
        numerics = check_numerics(model, batch, outputs, profile)
    except ProbeError:
        if library_path is not None:  # nothing ships that failed its check
            library_path.unlink(missing_ok=True)
            canary_beside(library_path).unlink(missing_ok=True)
        raise
    return _Run(w, numerics, compile_s, measure_s, remote)


def time_local(vm: Any, canary_vm: Any, example: np.ndarray, profile: Profile) -> Window:
    """One window on this host: ``vm`` interleaved with the canary, holding the timing lease."""
    t = tvm()
    dev = device_of(profile)
    m = profile.measure
    with timing_lease() as (held, waited):
        items = [
            prepare(vm, dev, t.runtime.tensor(example, dev), m),
            prepare(canary_vm, dev, t.runtime.tensor(canary_input().numpy(), dev), m),
        ]
        quiet = "lease" if held else "none"
        return window(items, m, canary=1, quiet=quiet, lease_wait_s=waited)[0]


def check_numerics(
    model: nn.Module, batch: torch.Tensor, outputs: np.ndarray, profile: Profile
) -> dict[str, Any]:
    """The compiled outputs against the PyTorch fake-quant model's.

    Raises:
        ProbeError: argmax agreement below :data:`MIN_ARGMAX_AGREEMENT`.
    """
    with torch.no_grad():
        ref = model.eval()(batch).numpy()
    agree = float((outputs.argmax(1) == ref.argmax(1)).mean())
    err = float(np.abs(outputs - ref).max())
    rel = err / max(float(np.abs(ref).max()), 1e-12)
    if agree < MIN_ARGMAX_AGREEMENT:
        raise ProbeError(
            f"compiled graph for {profile.name} disagrees with PyTorch: argmax agreement "
            f"{agree:.3f} < {MIN_ARGMAX_AGREEMENT} on {len(batch)} inputs (max |diff| {err:.3g}, "
            f"{rel:.2%} of the largest logit)"
        )
    return {
        "argmax_agreement": agree,
        "n_checked": len(batch),
        "numerics_checked": True,
        "max_abs_err": err,
        "rel_err": rel,
    }


def _measure_remote(
    ex: Any,
    example: torch.Tensor,
    singles: list[np.ndarray],
    profile: Profile,
    canary: Canary,
    library_path: Path | None = None,
) -> tuple[np.ndarray, Window, dict[str, Any]]:
    from workers.probe.rpc import measure_remote

    with tempfile.TemporaryDirectory() as tmp:
        lib = library_path  # already exported (cross-compiled): that file is sent
        if lib is None:
            lib = Path(tmp) / "probe.so"
            export_library(ex, lib, profile)
        r = measure_remote(lib, example.numpy(), singles, profile, canary=canary.path)
    extra = {
        "rpc": r.get("rpc"),
        "rpc_attempts": r.get("attempts"),
        "remote_threads": r.get("threads"),
    }
    return r["outputs"], r["window"], extra
