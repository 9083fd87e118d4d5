"""From a Relax module to a library for a profile: tuning state, compile, export.

Shared by the candidate probe, the canary and the dense parents of a verification, so all three
are compiled the same way (the profile's MetaSchedule database on CPUs, default dlight schedules
on GPUs, default CPU schedules only when the job turned tuning off).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hw_profiles import Profile
from workers import progress
from workers.probe import tuning
from workers.probe._intrin import load_cpu_intrinsics
from workers.probe.dot_check import usable_int8_dot
from workers.probe.dot_defaults import behind, dot_database
from workers.probe.targets import is_gpu, tvm


@dataclass
class TuningState:
    """What the compiler will use for a module: its tasks, the database, what is missing."""

    kind: str  # metaschedule | untuned | default-gpu
    db: Any = None
    tasks: list[Any] = field(default_factory=list)
    untuned: list[str] = field(default_factory=list)
    tune_s: float = 0.0
    digest: str = ""
    cost_model: str | None = None
    found_tuned: int = 0  # tasks with a record before this module tuned anything
    fused: Any = None  # the legalized, fused module the tasks came from (compiled as is)

    @property
    def partial(self) -> bool:
        return bool(self.untuned)


def tuning_state(
    mod: Any,
    target: Any,
    profile: Profile,
    tuning_root: Path | None,
    budget_s: float,
    settings: tuning.TuneSettings | None = None,
) -> TuningState:
    """Extract ``mod``'s tasks and tune those without a record within ``budget_s``.

    Raises:
        TuningUnavailableError: tuning was asked for but the cost model can't be built.
    """
    if is_gpu(profile):
        return TuningState("default-gpu", digest="default-gpu")
    if tuning_root is None:
        return TuningState("untuned", digest="untuned")
    path = tuning.db_dir(tuning_root, profile, target)
    fused = tuning.fuse(mod, target)
    tasks = tuning.extract(fused, target)
    tune_s = 0.0
    cost_model = None
    progress.report("waiting for the tuning database", detail=profile.name)
    with tuning.db_lock(path):
        db = tuning.open_db(path)
        todo = tuning.missing(tasks, db)
        found_tuned = len(tasks) - len(todo)
        if todo and budget_s > 0 and tuning.can_tune(profile):
            t0 = time.perf_counter()  # waiting for the lock is not this candidate's tuning
            report = tuning.tune(
                todo,
                db,
                path / "work",
                settings=settings or tuning.TuneSettings(),
                budget_s=budget_s,
                profile=profile,
                cost_model_path=tuning.cost_model_path(path),
                progress=lambda done, total, _: progress.report(
                    "tuning tasks", done, total, detail=profile.name
                ),
            )
            tuning.restamp(path, db)
            cost_model = str(report["cost_model"])
            tune_s = time.perf_counter() - t0
            todo = tuning.missing(tasks, db)
        digest = tuning.records_digest(tasks, db)
    return TuningState(
        "metaschedule",
        db,
        tasks,
        [x.task_name for x in todo],
        round(tune_s, 3),
        digest,
        cost_model,
        found_tuned,
        fused,
    )


def compile_module(mod: Any, target: Any, profile: Profile, state: TuningState | None) -> Any:
    """Compile with ``state``'s tuned schedules, or the default pipeline when it has no
    database (GPU profiles, tuning off, or no state). On a profile with an int8 dot-product
    path, int8 tasks without a record get a tensorized schedule
    (:mod:`workers.probe.dot_defaults`) instead of the plain default.

    With a database the module compiled is :attr:`TuningState.fused`, the one the tuning
    tasks were extracted from: ``mod`` is not legalized and fused a second time.
    """
    t = tvm()
    from tvm import relax

    if is_gpu(profile):  # CUDA source is compiled when the module is loaded on the GPU
        os.environ.setdefault("TVM_CUDA_COMPILE_MODE", "nvcc")
    dot = usable_int8_dot(profile)[0]
    if state is not None and state.db is not None:
        db = state.db
        if dot != "none" and state.untuned:  # untuned dot tasks: tensorized, not plain code
            todo = [task for task in state.tasks if task.task_name in state.untuned]
            defaults, covered = dot_database(todo, target)
            db = behind(db, defaults) if covered else db
        return compile_fused(state.fused, target, db)
    if dot != "none":
        fused = tuning.fuse(mod, target)
        defaults, covered = dot_database(tuning.extract(fused, target), target)
        if covered:
            return compile_fused(fused, target, defaults)
    prepared = tuning.prepare(mod)
    return t.compile(prepared, target=target, relax_pipeline=relax.get_default_pipeline(target))


def export_library(ex: Any, path: Path, profile: Profile) -> None:
    """Export ``ex`` to ``path`` (cross-compiled with the profile's compiler when it has one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = {"cc": profile.cross_compiler} if profile.cross_compiler else {}
    ex.export_library(str(path), **kwargs)


def compile_fused(fused: Any, target: Any, db: Any) -> Any:
    """``ms.relax_integration.compile_relax`` from its fusing step on: the tuned schedules of
    ``db`` applied to ``fused`` (:func:`tuning.fuse`'s output), then the target's lowering
    and finalizing passes (CPU targets: untuned functions keep their default schedules)."""
    t = tvm()
    from tvm import relax

    load_cpu_intrinsics()  # records may name tensor intrinsics (VNNI, sdot)
    lower = _lower_passes(target)

    @t.transform.module_pass(opt_level=3)  # type: ignore[untyped-decorator]
    def _apply_and_lower(mod: Any, _ctx: Any) -> Any:
        mod = relax.transform.MetaScheduleApplyDatabase()(mod)
        return t.transform.Sequential(lower)(mod)

    with target, db, t.transform.PassContext(opt_level=3):
        return relax.build(fused, target=target, relax_pipeline=_apply_and_lower)


def _lower_passes(target: Any) -> list[Any]:
    """The passes ``compile_relax`` runs after applying the database, fallback included (TVM
    0.27's ``cpu_generic`` backend does not export its pass lists, so CPU targets get it)."""
    from tvm import relax
    from tvm.relax import pipeline

    try:
        return [*pipeline.dataflow_lower_passes(target), *pipeline.finalize_passes(target)]
    except (ValueError, AttributeError):
        tf = relax.transform
        return [
            tf.RewriteDataflowReshape(),
            tf.ToNonDataflow(),
            tf.RemovePurityChecking(),
            tf.CallTIRRewrite(),
            tf.StaticPlanBlockMemory(),
            tf.LowerAllocTensor(),
            tf.KillAfterLastUse(),
            tf.LowerRuntimeBuiltin(),
            tf.ComputePrimValue(),
            tf.VMShapeLower(),
            tf.AttachGlobalSymbol(),
        ]
