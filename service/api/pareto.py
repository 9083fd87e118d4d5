"""A job's Pareto front as API points (verified latencies where the job has them)."""

from __future__ import annotations

from typing import Any

from service.scheduler.front import FrontPoint
from service.schemas import ParetoPoint
from workers.scoring import latency_profile


def pareto_points(points: list[FrontPoint], metric_names: list[str]) -> list[ParetoPoint]:
    """Turn front points into API points, sorted by accuracy."""
    out = []
    for fp in points:
        t, m = fp.trial, fp.metrics
        profiles = [p for p in (latency_profile(n) for n in metric_names) if p] or list(
            m.latency_ms
        )
        search = fp.search_latency_ms
        ver = {p: v for p, v in fp.verified.items() if v.median_ms is not None}
        cand: dict[str, Any] = t.user_attrs.get("candidate", {})
        probes = {p: dict(t.user_attrs.get(f"latency@{p}") or {}) for p in profiles}
        out.append(
            ParetoPoint(
                trial=t.number,
                accuracy=float(m.accuracy if m.accuracy is not None else float("nan")),
                test_accuracy=m.test_accuracy,
                test_accuracy_ci95=m.test_accuracy_ci95,
                latency_ms={p: float(m.latency_ms[p]) for p in profiles if p in m.latency_ms},
                latency_source={p: "verified" if p in ver else "search" for p in profiles},
                latency_search_ms=search,
                latency_tuning={p: str(probes[p].get("tuning", "unknown")) for p in profiles},
                latency_partial={p: _partial(p, probes[p], fp) for p in profiles},
                int8_dot={p: str(v["int8_dot"]) for p, v in probes.items() if "int8_dot" in v},
                isa={p: list(v["isa"]) for p, v in probes.items() if v.get("isa")},
                verified={p: v.model_dump(mode="json") for p, v in fp.verified.items()},
                speedup_vs_dense={p: v.speedup_vs_dense for p, v in ver.items()},
                no_speedup={p: v.no_speedup for p, v in ver.items()},
                latency_disagrees={p: v.disagrees for p, v in ver.items()},
                size_bytes=int(m.size_bytes),
                size_ratio_vs_dense=(
                    m.dense_size_bytes / m.size_bytes if m.dense_size_bytes else None
                ),
                accuracy_change=_change(m.accuracy, m.parent_accuracy),
                test_accuracy_change=_change(m.test_accuracy, m.parent_test_accuracy),
                file_scores=dict(t.user_attrs.get("file_scores") or {}),
                candidate=cand,
                summary=str(t.user_attrs.get("summary", "")),
                model_id=t.user_attrs.get("model_id"),
            )
        )
    return sorted(out, key=lambda p: (-p.accuracy, p.size_bytes))


def _partial(profile: str, probe: dict[str, Any], fp: FrontPoint) -> bool | None:
    """Whether the point's shipped library has untuned tasks: as verified (verification
    finishes a partly tuned library first) where the job verified it, else as searched."""
    v = fp.verified.get(profile)
    if v is not None and v.library_partial is not None:
        return v.library_partial
    partial = probe.get("partial")
    return None if partial is None else bool(partial)


def _change(value: float | None, parent: float | None) -> float | None:
    return None if value is None or parent is None else round(value - parent, 6)


def compared_with(spec: dict[str, Any]) -> str:
    """What a job's points are compared with (ParetoPublic.compared_with)."""
    if spec.get("network"):
        digest = str(spec.get("network_digest") or "")[:12]
        return f"your model {spec['network']} (sha256 {digest}...), as uploaded, fp32"
    return "each point's dense fp32 parent (same architecture, trained by hwnas)"
