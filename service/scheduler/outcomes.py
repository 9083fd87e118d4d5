"""What a finished evaluation becomes in the study and in the trial's row.

Each function runs inside the job's fence (the caller's ``fence.session()``): the Optuna writes
and the row's are made by the lease holder only. ``faults.point("after_tell")`` marks the one
place where a crash leaves the two records apart (study COMPLETE, row running): claiming the job
again reconciles them (``TrialRecords.reconcile``).
"""

from __future__ import annotations

from typing import Any

import optuna

from service.db.models import TrialState
from service.scheduler.front import JobScoring
from service.scheduler.records import TrialRecords
from workers import faults
from workers.records import EvalResult, Metrics
from workers.scoring import Constraint, constraint_values


def set_constraints(t: optuna.trial.Trial, penalties: dict[str, float]) -> None:
    for name, v in penalties.items():
        t.set_constraint(name, v)
    t.set_user_attr("constraints", penalties)
    t.set_user_attr("feasible", all(v <= 0 for v in penalties.values()))


def tell_complete(
    records: TrialRecords,
    study: optuna.Study,
    t: optuna.trial.Trial,
    result: EvalResult,
    values: list[float],
    penalties: dict[str, float],
    cost: dict[str, Any],
    model_id: str,
) -> None:
    m = result.metrics
    t.set_user_attr("metrics", m.model_dump(mode="json"))
    t.set_user_attr("test_accuracy", m.test_accuracy)
    t.set_user_attr("test_accuracy_ci95", m.test_accuracy_ci95)
    t.set_user_attr("params", m.params)
    t.set_user_attr("model_id", model_id)
    t.set_user_attr("timings", result.timings)
    t.set_user_attr("parent_cache_hit", result.parent_cache_hit)
    t.set_user_attr("node", result.node)
    t.set_user_attr("bundle_dir", result.bundle_dir)  # for reconciliation after a crash
    scores = {k: f.model_dump(mode="json") for k, f in result.files.items()}
    t.set_user_attr("file_scores", scores)
    for prof, st in result.latency.items():
        t.set_user_attr(f"latency@{prof}", st.public())
    set_constraints(t, penalties)
    study.tell(t, values)
    faults.point("after_tell")
    records.update(
        t.number,
        TrialState.complete,
        metrics=m.model_dump(mode="json"),
        latency={p: st.model_dump(mode="json") for p, st in result.latency.items()},
        timings=cost,
        bundle_dir=result.bundle_dir,
    )


def tell_rejected(
    records: TrialRecords,
    study: optuna.Study,
    t: optuna.trial.Trial,
    result: EvalResult,
    cost: dict[str, Any],
    constraints: list[Constraint],
    scoring: JobScoring,
) -> None:
    """A candidate the pre-filter rejected: COMPLETE and infeasible in the study (so the
    sampler learns the region is out of bounds), never trained. Its accuracy objective is
    a placeholder 0, marked ``accuracy_measured = False``."""
    assert result.prefilter is not None
    m: Metrics = result.metrics.model_copy(update={"accuracy": 0.0})
    violations = result.prefilter.violations
    t.set_user_attr("prefiltered", True)
    t.set_user_attr("accuracy_measured", False)
    t.set_user_attr("violations", violations)
    for prof, st in result.latency.items():
        t.set_user_attr(f"latency@{prof}", st.public())
    before = [c for c in constraints if c.before_training]
    set_constraints(t, constraint_values(m, before))
    study.tell(t, scoring.values(m))
    records.update(
        t.number,
        TrialState.rejected,
        metrics=result.metrics.model_dump(mode="json"),
        latency={p: st.model_dump(mode="json") for p, st in result.latency.items()},
        timings=cost,
        error="pre-filter: " + "; ".join(f"{k!r} broken by {v:.0%}" for k, v in violations.items()),
    )
