"""Pareto front of a job, read from its Optuna study."""

from __future__ import annotations

from typing import Any

from optuna.trial import FrozenTrial

from service.schemas import ParetoPoint


def pareto_points(best_trials: list[FrozenTrial], metric_names: list[str]) -> list[ParetoPoint]:
    """Turn Optuna's non-dominated COMPLETE trials into API points, sorted by accuracy."""
    points = []
    for t in best_trials:
        values = dict(zip(metric_names, t.values, strict=True))
        latency = {
            k.split("@", 1)[1]: float(v) for k, v in values.items() if k.startswith("latency_ms@")
        }
        tuning = {
            p: str((t.user_attrs.get(f"latency@{p}") or {}).get("tuning", "unknown"))
            for p in latency
        }
        cand: dict[str, Any] = t.user_attrs.get("candidate", {})
        points.append(
            ParetoPoint(
                trial=t.number,
                accuracy=float(values.get("accuracy", float("nan"))),
                test_accuracy=t.user_attrs.get("test_accuracy"),
                latency_ms=latency,
                latency_tuning=tuning,
                size_bytes=int(values.get("size_bytes", 0)),
                candidate=cand,
                summary=str(t.user_attrs.get("summary", "")),
                model_id=t.user_attrs.get("model_id"),
            )
        )
    return sorted(points, key=lambda p: (-p.accuracy, p.size_bytes))
