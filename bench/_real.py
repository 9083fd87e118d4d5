"""The real runs of the search benchmark: confirmation (default vs random), successive halving
vs full budget, the pre-filter on a constrained job, and warm start on a second profile.

Every run is a real job (training, compression, TVM probes with TVM's default schedules:
``tuning: off``, since a fresh clone has no pre-tuned database and tuning would dominate the
time) on digits ``small_joint``.
"""

from __future__ import annotations

import logging
from typing import Any

from _hv import hv_curve
from _jobs import PROFILE, Bench

log = logging.getLogger("bench.search.real")
SECOND_PROFILE = "x86/local-2t"
TRAINING = {"epochs": 20, "finetune_epochs": 6}


def spec(sampler: str, seed: int, trials: int, **extra: Any) -> dict[str, Any]:
    profile = extra.pop("profile", PROFILE)
    return {
        "dataset": "digits",
        "space": "small_joint",
        "profiles": [profile],
        "objectives": ["accuracy", f"latency@{profile}", "size"],
        "budget": {"trials": trials, "tune_s": 0},
        "training": TRAINING,
        "tuning": "off",
        "sampler": sampler,
        "seed": seed,
        **extra,
    }


def confirmation(bench: Bench, seeds: list[int], trials: int) -> dict[str, Any]:
    """Default ("auto") vs random, ``trials`` each, per seed: final hypervolumes, curves and
    the scheduler's overhead over all of them."""
    out: dict[str, Any] = {"trials": trials, "seeds": seeds, "runs": {}}
    wall = busy = 0.0
    for strategy, sampler in (("default", "auto"), ("random", "random")):
        for seed in seeds:
            run = bench.job(f"confirm-{strategy}-{seed}", spec(sampler, seed, trials))
            curve = hv_curve(run["points"])
            out["runs"][f"{strategy}/{seed}"] = {
                "job_id": run["job_id"],
                "final_hv": curve[-1] if curve else 0.0,
                "hypervolume": curve,
                "wall_s": round(run["wall_s"], 1),
                "trial_s": round(run["trial_s"], 1),
                "duplicates_refused": run["duplicates_refused"],
                "duplicates_trained": run["duplicates_trained"],
                "sampler": run["sampler"],
            }
            wall += run["wall_s"]
            busy += run["trial_s"]
            log.info(
                "confirm %s seed %d: final HV %.4f",
                strategy,
                seed,
                out["runs"][f"{strategy}/{seed}"]["final_hv"],
            )
    slots = bench.executor.capacity
    out["slots"] = slots
    out["overhead_fraction"] = round((wall * slots - busy) / busy, 4) if busy else None
    return out


def _hv_at(points: list[dict[str, Any]], wall_s: float) -> float:
    done = [p for p in points if p["finished_s"] is not None and p["finished_s"] <= wall_s]
    curve = hv_curve(done)
    return curve[-1] if curve else 0.0


def sh_pair(bench: Bench, seed: int, trials: int) -> dict[str, Any]:
    """Successive halving (a third of the epochs, then full; keep 1/3) vs every trial at full
    budget, hypervolume against wall seconds, compared at the wall time both reached."""
    full = bench.job("sh-full", spec("auto", seed, trials))
    sh = bench.job(
        "sh-halving",
        spec("auto", seed, max(2, trials // 2), fidelity={"min_fraction": 1 / 3, "eta": 3}),
    )
    common = min(full["wall_s"], sh["wall_s"])
    grid = [round(common * k / 10, 1) for k in range(1, 11)]
    return {
        "budget_full": trials,
        "budget_sh": max(2, trials // 2),
        "wall_s": {"full": round(full["wall_s"], 1), "sh": round(sh["wall_s"], 1)},
        "compared_at_wall_s": round(common, 1),
        "hv_full": _hv_at(full["points"], common),
        "hv_sh": _hv_at(sh["points"], common),
        "curve_wall_s": grid,
        "curve_full": [_hv_at(full["points"], t) for t in grid],
        "curve_sh": [_hv_at(sh["points"], t) for t in grid],
        "trained_full": len(full["points"]),
        "trained_sh_top_rung": len(sh["points"]),
        "pruned_sh": sum(1 for r in sh["rows"] if r["state"] == "pruned"),
    }


def _feasible_times(run: dict[str, Any], size_limit: int) -> list[float]:
    return sorted(
        p["finished_s"]
        for p in run["points"]
        if p["size_bytes"] <= size_limit and p["finished_s"] is not None
    )


def prefilter_pair(bench: Bench, seed: int, trials: int, size_limit: int) -> dict[str, Any]:
    """The same constrained job (``size <= size_limit``) with the pre-filter on and off, the
    same seeded random proposals: wall seconds until each had found the feasible candidates the
    job without the pre-filter found."""
    kb = size_limit / 1000
    constraint = [f"size <= {kb:g} KB"]
    off = bench.job(
        "prefilter-off", spec("random", seed, trials, constraints=constraint, prefilter=False)
    )
    on = bench.job(
        "prefilter-on", spec("random", seed, trials, constraints=constraint, prefilter=True)
    )
    t_off, t_on = _feasible_times(off, size_limit), _feasible_times(on, size_limit)
    k = min(len(t_off), len(t_on))
    rejected = sum(1 for r in on["rows"] if r["state"] == "rejected")
    return {
        "constraint": constraint[0],
        "trained": {"off": len(off["points"]), "on": len(on["points"])},
        "feasible_found": {"off": len(t_off), "on": len(t_on)},
        "rejected_untrained_on": rejected,
        "compared_feasible": k,
        "wall_s_to_k_feasible": {
            "off": t_off[k - 1] if k else None,
            "on": t_on[k - 1] if k else None,
        },
        "saved_s": round(t_off[k - 1] - t_on[k - 1], 1) if k else None,
        "wall_s": {"off": round(off["wall_s"], 1), "on": round(on["wall_s"], 1)},
    }


def transfer(bench: Bench, source_job: int, seed: int, trials: int) -> dict[str, Any]:
    """A job on a second x86 profile (2 threads), with and without a warm start from the
    source job's front: hypervolume after ``trials`` (latency on the second profile)."""
    extra = {"profile": SECOND_PROFILE}
    cold = bench.job("transfer-cold", spec("auto", seed, trials, **dict(extra)))
    warm = bench.job(
        "transfer-warm",
        spec("auto", seed, trials, warm_start_from=source_job, **dict(extra)),
    )

    c, w = hv_curve(cold["points"]), hv_curve(warm["points"])
    return {
        "profile": SECOND_PROFILE,
        "source_job": source_job,
        "trials": trials,
        "hv_cold": c[-1] if c else 0.0,
        "hv_warm": w[-1] if w else 0.0,
        "curve_cold": c,
        "curve_warm": w,
        "warm_started_trials": sum(
            1 for r in warm["rows"] if r["state"] == "complete" and r.get("warm")
        ),
    }
