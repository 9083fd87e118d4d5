"""Objectives and constraints: one place that names them, reads them off a result and scores
them. The API (validation), the worker's pre-filter, the controller (what Optuna is told) and
the verified front all call these functions, so they can't drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from workers.records import Metrics

Direction = Literal["maximize", "minimize"]

# objective name in a job spec -> (metric name in the study, direction)
OBJECTIVES: dict[str, tuple[str, Direction]] = {
    "accuracy": ("accuracy", "maximize"),
    "size": ("size_bytes", "minimize"),
    "macs": ("macs", "minimize"),
    "bitops": ("bitops", "minimize"),
}
LATENCY_PREFIX = "latency_ms@"


def objective_metric(objective: str) -> tuple[str, Direction]:
    """``accuracy`` -> (``accuracy``, maximize); ``latency@P`` -> (``latency_ms@P``, minimize).

    Raises:
        KeyError: not an objective name (see :data:`OBJECTIVES`, ``latency@<profile>``).
    """
    if objective in OBJECTIVES:
        return OBJECTIVES[objective]
    if objective.startswith("latency@"):
        return f"{LATENCY_PREFIX}{objective.split('@', 1)[1]}", "minimize"
    raise KeyError(objective)


def latency_profile(metric: str) -> str | None:
    """The profile of a ``latency_ms@<profile>`` metric, else None."""
    return metric.split("@", 1)[1] if metric.startswith(LATENCY_PREFIX) else None


def metric_value(metrics: Metrics, name: str) -> float:
    """A study metric (``latency_ms@<profile>``, ``accuracy``, ``size_bytes``, ...) of a result.

    Raises:
        KeyError: the result does not carry that metric (e.g. no latency for the profile).
    """
    profile = latency_profile(name)
    if profile is not None:
        return float(metrics.latency_ms[profile])
    value = getattr(metrics, name, None)
    if value is None:
        raise KeyError(f"result has no {name!r}")
    return float(value)


class Constraint(BaseModel):
    """``metric`` (a study metric) ``op`` (``<=`` or ``>=``) ``bound`` (in the metric's unit);
    ``text`` is how the user wrote it (the constraint's name in the study)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str
    metric: str
    op: Literal["<=", ">="]
    bound: float

    @property
    def before_training(self) -> bool:
        """Known from the structure alone (latency, size, compute), so it can pre-filter."""
        return self.metric != "accuracy"

    def violation(self, value: float) -> float:
        """<= 0 when satisfied, else the excess relative to the bound (Optuna's convention;
        relative, so violations in ms and in bytes add up comparably)."""
        scale = abs(self.bound) or 1.0
        d = (value - self.bound) if self.op == "<=" else (self.bound - value)
        return d / scale


TUNED = "latency_tuned"  # the implicit constraint: no final latency from partly untuned code


def constraint_values(
    metrics: Metrics, constraints: Sequence[Constraint], *, require_tuned: bool = False
) -> dict[str, float]:
    """Optuna constraint values (<= 0 feasible) of a result, by constraint text.

    With ``require_tuned``, ``latency_tuned`` is added: 1.0 when a latency came from partly
    untuned code (kept, but never final: the trial stays off the front).
    """
    out = {c.text: round(c.violation(metric_value(metrics, c.metric)), 6) for c in constraints}
    if require_tuned:
        out[TUNED] = 1.0 if metrics.latency_partial else 0.0
    return out


def rejections(metrics: Metrics, constraints: Sequence[Constraint]) -> dict[str, float]:
    """The pre-filter's verdict: the broken bounds known before training, by text.

    A latency from a partly untuned probe never rejects: untuned code is slower than what the
    trained candidate would get.
    """
    out: dict[str, float] = {}
    for c in constraints:
        if not c.before_training or latency_profile(c.metric) in metrics.latency_partial:
            continue
        v = c.violation(metric_value(metrics, c.metric))
        if v > 0:
            out[c.text] = round(v, 6)
    return out


def feasible(values: Mapping[str, float]) -> bool:
    return all(v <= 0 for v in values.values())


def nondominated(points: Sequence[Sequence[float]], directions: Sequence[Direction]) -> list[int]:
    """Indices of the points no other point dominates (equal points are all kept)."""
    sign = [1.0 if d == "minimize" else -1.0 for d in directions]
    keyed = [[s * v for s, v in zip(sign, p, strict=True)] for p in points]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x <= y for x, y in zip(a, b, strict=True)) and a != b

    return [i for i, p in enumerate(keyed) if not any(dominates(q, p) for q in keyed)]
