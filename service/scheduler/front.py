"""A job's Pareto front, recomputed from verified latencies where the job has them.

Optuna's ``best_trials`` uses the values told during the search (search-time latencies, maybe
from the probe cache). After a job, the front's shipped libraries are timed again
(:mod:`service.scheduler.verification`); their verified numbers replace the search-time ones,
constraints are scored again with them (:func:`workers.scoring.constraint_values`, the same
scoring the search used) and the non-dominated set recomputed. Optuna does not let a finished
trial's attributes change, so the verified numbers are kept as study user attributes
(``verified:<trial number>``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from service.schemas.constraints import parse_constraint
from workers.records import Metrics, Verified
from workers.scoring import (
    Constraint,
    Direction,
    constraint_values,
    feasible,
    latency_profile,
    metric_value,
    nondominated,
    objective_metric,
)

VERIFIED_PREFIX = "verified:"


@dataclass(frozen=True)
class JobScoring:
    """How a job's results are scored: study metrics, directions, constraints."""

    metric_names: list[str]
    directions: list[Direction]
    constraints: list[Constraint]
    require_tuned: bool

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> JobScoring:
        """From a stored job spec (objectives already expanded per profile at submission)."""
        pairs = [objective_metric(o) for o in spec["objectives"]]
        profiles = list(spec["profiles"])
        return cls(
            metric_names=[m for m, _ in pairs],
            directions=[d for _, d in pairs],
            constraints=[parse_constraint(t, profiles) for t in spec.get("constraints", [])],
            require_tuned=spec.get("tuning", "metaschedule") == "metaschedule"
            and any(latency_profile(m) for m, _ in pairs),
        )

    def values(self, m: Metrics) -> list[float]:
        return [metric_value(m, name) for name in self.metric_names]

    def constraint_values(self, m: Metrics) -> dict[str, float]:
        return constraint_values(m, self.constraints, require_tuned=self.require_tuned)


@dataclass
class FrontPoint:
    trial: FrozenTrial
    metrics: Metrics  # latency_ms is the verified one where verified
    values: list[float]
    verified: dict[str, Verified]
    search_latency_ms: dict[str, float]


def verified_of(study: optuna.Study) -> dict[int, dict[str, Verified]]:
    """Verified latencies by trial number, then profile."""
    out: dict[int, dict[str, Verified]] = {}
    for key, value in study.user_attrs.items():
        if key.startswith(VERIFIED_PREFIX):
            number = int(key[len(VERIFIED_PREFIX) :])
            out[number] = {p: Verified.model_validate(v) for p, v in value["latency"].items()}
    return out


def front(study: optuna.Study, scoring: JobScoring) -> list[FrontPoint]:
    """The feasible non-dominated trained trials, with verified latencies where measured."""
    verified = verified_of(study)
    candidates: list[FrontPoint] = []
    hashes: set[str] = set()
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.user_attrs.get("prefiltered"):
            continue
        digest = t.user_attrs.get("candidate_hash")
        if digest:  # a candidate trained twice (jobs before duplicates were refused): once
            if digest in hashes:
                continue
            hashes.add(digest)
        if "metrics" not in t.user_attrs:  # a trial told before metrics were kept: as told
            if t.user_attrs.get("feasible", True):
                m = _told(t, scoring)
                candidates.append(FrontPoint(t, m, list(t.values), {}, dict(m.latency_ms)))
            continue
        m = Metrics.model_validate(t.user_attrs["metrics"])
        ver = verified.get(t.number, {})
        lat = dict(m.latency_ms)
        for p, v in ver.items():
            if v.median_ms is not None:
                lat[p] = v.median_ms
        search = dict(m.latency_ms)
        m = m.model_copy(update={"latency_ms": lat})
        if not feasible(scoring.constraint_values(m)):
            continue
        candidates.append(FrontPoint(t, m, scoring.values(m), ver, search))
    keep = nondominated([c.values for c in candidates], scoring.directions)
    return [candidates[i] for i in keep]


def _told(t: FrozenTrial, scoring: JobScoring) -> Metrics:
    """The metrics of an older trial, from the values Optuna was told."""
    values = dict(zip(scoring.metric_names, t.values, strict=True))
    return Metrics(
        accuracy=values.get("accuracy"),
        test_accuracy=t.user_attrs.get("test_accuracy"),
        size_bytes=int(values.get("size_bytes", 0)),
        macs=int(values.get("macs", 0)),
        bitops=int(values.get("bitops", 0)),
        latency_ms={p: v for n, v in values.items() if (p := latency_profile(n)) is not None},
    )
