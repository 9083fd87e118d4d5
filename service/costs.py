"""A trial's cost in a few numbers, from its runs (``hwnas_trials.timings['runs']``): what
``/metrics`` sums in SQL (kept as columns of the trial's row)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

TRAINING = ("parent_s", "compress_s")  # wall seconds of training: the dense parent, fine-tuning
PROBING = ("prefilter_s", "probe_s")  # wall seconds of TVM probes: pre-filter, after training


def trial_cost(runs: Iterable[dict[str, Any]]) -> dict[str, float | int]:
    """Training and probe seconds, and cache lookups / hits (parents, probe measurements,
    tuning records per task), over every run of one trial (a rung, a re-run)."""
    out: dict[str, float | int] = {
        "train_s": 0.0,
        "probe_s": 0.0,
        "parent_lookups": 0,
        "parent_hits": 0,
        "probe_lookups": 0,
        "probe_hits": 0,
        "task_lookups": 0,
        "task_hits": 0,
    }
    for run in runs:
        wall = run.get("timings") or {}
        out["train_s"] += sum(float(wall.get(k, 0.0)) for k in TRAINING)
        out["probe_s"] += sum(float(wall.get(k, 0.0)) for k in PROBING)
        if run.get("parent_cache_hit") is not None:
            out["parent_lookups"] += 1
            out["parent_hits"] += int(bool(run["parent_cache_hit"]))
        hits = run.get("probe_cache_hits") or []
        out["probe_lookups"] += len(hits)
        out["probe_hits"] += sum(1 for h in hits if h)
        for found, n in run.get("probe_tasks") or []:
            out["task_lookups"] += int(n)
            out["task_hits"] += int(found)
    out["train_s"] = round(float(out["train_s"]), 3)
    out["probe_s"] = round(float(out["probe_s"]), 3)
    return out
