"""A job's cost and savings, summed from its trial rows (``hwnas_trials.timings['runs']``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from service.db.models import Trial, TrialState
from service.schemas import JobReport

_TRAINING = ("parent_s", "compress_s", "evaluate_s")  # what the pre-filter spares a candidate


def job_report(job_id: int, rows: Iterable[Trial]) -> JobReport:
    states: Counter[str] = Counter()
    cpu: Counter[str] = Counter()
    wall: Counter[str] = Counter()
    device: Counter[str] = Counter()
    nodes: Counter[str] = Counter()
    parent = Counter[str]()
    probe = Counter[str]()
    tasks = Counter[str]()
    trained_s: list[float] = []
    for row in rows:
        states[row.state.value] += 1
        runs: list[dict[str, Any]] = (row.timings or {}).get("runs", [])
        for run in runs:
            cpu.update({k: float(v) for k, v in (run.get("cpu_s") or {}).items()})
            wall.update({k: float(v) for k, v in (run.get("timings") or {}).items()})
            device.update({k: float(v) for k, v in (run.get("device_s") or {}).items()})
            if run.get("node"):
                nodes[str(run["node"])] += 1
            if run.get("parent_cache_hit") is not None:
                parent["lookups"] += 1
                parent["hits"] += bool(run["parent_cache_hit"])
            hits = run.get("probe_cache_hits") or []
            probe["lookups"] += len(hits)
            probe["hits"] += sum(bool(h) for h in hits)
            for found, n in run.get("probe_tasks") or []:
                tasks["lookups"] += int(n)
                tasks["hits"] += int(found)
        if row.state == TrialState.complete and runs:
            last = runs[-1].get("timings") or {}
            trained_s.append(sum(float(last.get(k, 0.0)) for k in _TRAINING))
    rejected = states.get(TrialState.rejected.value, 0)
    mean_train = sum(trained_s) / len(trained_s) if trained_s else None
    return JobReport(
        job_id=job_id,
        trials=dict(states),
        cpu_s={**_rounded(cpu), "total": round(sum(cpu.values()), 3)},
        device_s=_rounded(device),
        wall_s=_rounded(wall),
        cache={"parent": _rate(parent), "probe": _rate(probe), "tuning_tasks": _rate(tasks)},
        prefilter={
            "rejected": rejected,
            "spent_s": round(wall.get("prefilter_s", 0.0), 3),
            "train_s_per_trained_trial": None if mean_train is None else round(mean_train, 3),
            # each rejected candidate would have cost what a trained one cost on average
            "train_s_saved_est": None if mean_train is None else round(rejected * mean_train, 3),
        },
        nodes=dict(nodes),
    )


def _rounded(c: Counter[str]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in sorted(c.items())}


def _rate(c: Counter[str]) -> dict[str, Any]:
    n = c.get("lookups", 0)
    return {
        "lookups": n,
        "hits": c.get("hits", 0),
        "hit_rate": round(c.get("hits", 0) / n, 4) if n else None,
    }
