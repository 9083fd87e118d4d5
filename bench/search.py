"""Search benchmark: joint NSGA-II vs joint random search vs a sequential pipeline.

Every strategy runs as real jobs of the service's controller (Optuna ask/tell in the service
database, trials as Ray tasks that train, compress, fine-tune and TVM-probe each candidate) on
the same dataset, seed and trial budget:

- ``joint_nsga2``: NSGA-II over architecture x per-layer bits x prune x rank at once;
- ``random``: random search over the same joint space;
- ``sequential``: half the budget searches the architecture for accuracy (TPE, uncompressed),
  the other half searches the compression of the most accurate architecture (NSGA-II with the
  architecture pinned by ``fixed_params``).

Hypervolume after each COMPLETE trial (in trial order) is computed over (validation error,
latency, size) against a fixed reference point (see ``_hv.py``). Scheduler overhead is the
worker-slot time not spent inside trials: ``(wall x slots - sum of in-task trial seconds) /
sum of in-task trial seconds``.

    python bench/search.py --out bench/results            # digits 200 + Fashion-MNIST subset
    python bench/search.py --budget 20 --fashion-budget 0  # a quick look
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _hv import REFERENCE, hv_curve, plot  # noqa: E402

from service.api.report import job_report  # noqa: E402
from service.db import crud  # noqa: E402
from service.db.migrate import upgrade  # noqa: E402
from service.db.models import Job, TrialState  # noqa: E402
from service.db.queue import claim_job  # noqa: E402
from service.db.session import get_sessionmaker  # noqa: E402
from service.scheduler.controller import JobController  # noqa: E402
from service.scheduler.executor import RayExecutor  # noqa: E402
from service.scheduler.study import get_storage, load_study  # noqa: E402
from service.schemas import JobCreate  # noqa: E402
from service.settings import Settings  # noqa: E402

log = logging.getLogger("bench.search")
PROFILE = "x86/local"
NO_COMPRESSION = {
    "wbits": [32],
    "codebook_bits": [0],
    "abits": [32],
    "sparsity": [0.0],
    "prune": [0.0],
    "rank": [1.0],
    "head_wbits": [32],
}
COMPRESSION_SUFFIXES = ("wbits", "codebook_bits", "abits", "sparsity", "prune", "rank")

DATASETS: dict[str, dict[str, Any]] = {
    "digits": {
        "space": "small_joint",
        "training": {"epochs": 20, "finetune_epochs": 6},
    },
    "fashion_mnist_small": {  # narrowed so a trial takes ~20 s on one core
        "space": "cnn_small",
        "space_overrides": {"depth": [2, 3], "width": [8, 16, 24, 32]},
        "training": {"epochs": 3, "finetune_epochs": 1, "batch_size": 128, "qat_epochs": 1},
    },
}


class Bench:
    def __init__(self, root: Path, seed: int) -> None:
        self.root, self.seed = root, seed
        self.url = f"sqlite:///{root / 'bench.db'}"
        upgrade(self.url)
        get_storage(self.url)
        self.executor = RayExecutor(self._settings("ray"))

    def _settings(self, name: str) -> Settings:
        # separate artifact dirs per strategy: each builds its own parent and probe caches
        return Settings(
            database_url=self.url,
            artifact_dir=self.root / name,
            tuning_dir=self.root / name / "tuning",
            probe_cache_dir=self.root / name / "probe-cache",
            poll_interval_s=0.5,
            verify=False,  # strategies are compared on search-time numbers (bench-fidelity
            # measures what verification changes)
        )

    def job(self, name: str, spec: dict[str, Any], store: str | None = None) -> dict[str, Any]:
        """Run one job to its end; its COMPLETE trials' results, wall time and report.
        ``store`` names the artifact dir (parent and probe caches; default ``name``)."""
        sessions = get_sessionmaker(self.url)
        with sessions() as s:
            job = crud.create_job(session=s, job_in=JobCreate.model_validate(spec))
            claimed = claim_job(session=s, worker_id="bench", stale_after_s=3600)
            assert claimed is not None and claimed.id == job.id
            job_id = job.id
        t0 = time.perf_counter()
        settings = self._settings(store or name)
        status = JobController(settings, self.executor, job_id, "bench").run()
        wall = time.perf_counter() - t0
        with sessions() as s:
            j = s.get(Job, job_id)
            assert j is not None
            if status.value != "succeeded":
                raise RuntimeError(f"{name}: job {job_id} ended {status.value}: {j.error}")
            rows, _ = crud.list_trials(session=s, job_id=job_id, skip=0, limit=100_000)
            report = job_report(job_id, rows).model_dump()
        points, trial_s = [], 0.0
        for r in rows:
            for run in (r.timings or {}).get("runs", []):
                trial_s += sum(float(v) for v in (run.get("timings") or {}).values())
            if r.state == TrialState.complete and r.metrics:
                m = r.metrics
                points.append(
                    {
                        "trial": r.number,
                        "accuracy": m["accuracy"],
                        "latency_ms": m["latency_ms"][PROFILE],
                        "size_bytes": m["size_bytes"],
                    }
                )
        log.info("%s: %d trials in %.0f s", name, len(points), wall)
        return {
            "job_id": job_id,
            "points": points,
            "wall_s": wall,
            "trial_s": trial_s,
            "report": report,
        }

    def strategies(self, dataset: str, budget: int) -> dict[str, Any]:
        cfg = DATASETS[dataset]
        base = {
            "dataset": dataset,
            "space": cfg["space"],
            "space_overrides": cfg.get("space_overrides", {}),
            "profiles": [PROFILE],
            "objectives": ["accuracy", f"latency@{PROFILE}", "size"],
            "budget": {"trials": budget, "tune_s": 0},
            "training": cfg["training"],
            "tuning": "off",
            "seed": self.seed,
        }
        out = {
            "joint_nsga2": self.job(f"{dataset}-nsga2", {**base, "sampler": "nsga2"}),
            "random": self.job(f"{dataset}-random", {**base, "sampler": "random"}),
        }
        half = budget // 2
        arch = self.job(
            f"{dataset}-seq-arch",
            {
                **base,
                "objectives": ["accuracy"],
                "sampler": "tpe",
                "space_overrides": {**base["space_overrides"], **NO_COMPRESSION},
                "budget": {"trials": half, "tune_s": 0},
            },
            store=f"{dataset}-seq",
        )
        best = max(load_study(self.url, arch["job_id"]).best_trials, key=lambda t: t.values[0])
        fixed = {k: v for k, v in best.params.items() if not k.endswith(COMPRESSION_SUFFIXES)}
        comp = self.job(
            f"{dataset}-seq-compress",
            {
                **base,
                "sampler": "nsga2",
                "fixed_params": fixed,
                "budget": {"trials": budget - half, "tune_s": 0},
            },
            store=f"{dataset}-seq",  # the architecture phase's parents carry over
        )
        out["sequential"] = {
            "points": arch["points"] + comp["points"],
            "wall_s": arch["wall_s"] + comp["wall_s"],
            "trial_s": arch["trial_s"] + comp["trial_s"],
            "report": {"architecture": arch["report"], "compression": comp["report"]},
            "architecture": fixed,
        }
        return out


def summarize(dataset: str, budget: int, runs: dict[str, Any], slots: int) -> dict[str, Any]:
    hv = {name: hv_curve(r["points"]) for name, r in runs.items()}
    target = hv["random"][-1] if hv["random"] else None
    match = None
    if target is not None:
        match = next((i + 1 for i, v in enumerate(hv["joint_nsga2"]) if v >= target - 1e-12), None)
    wall = sum(r["wall_s"] for r in runs.values())
    busy = sum(r["trial_s"] for r in runs.values())
    return {
        "dataset": dataset,
        "space": DATASETS[dataset]["space"],
        "budget": budget,
        "reference_point": REFERENCE,
        "hypervolume": hv,
        "trials_to_match_random_final": match,
        "overhead_fraction": round((wall * slots - busy) / busy, 4) if busy else None,
        "wall_s": {k: round(r["wall_s"], 1) for k, r in runs.items()},
        "trial_s": {k: round(r["trial_s"], 1) for k, r in runs.items()},
        "slots": slots,
        "points": {k: r["points"] for k, r in runs.items()},
        "reports": {k: r["report"] for k, r in runs.items()},
        "sequential_architecture": runs["sequential"]["architecture"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    ap.add_argument("--budget", type=int, default=200, help="COMPLETE trials per strategy")
    ap.add_argument("--fashion-budget", type=int, default=20, help="0 skips Fashion-MNIST")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("optuna", "service.scheduler", "tvm", "workers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    root = Path(tempfile.mkdtemp(prefix="hwnas-bench-search-"))
    t0 = time.perf_counter()
    bench = Bench(root, args.seed)
    slots = bench.executor.capacity
    try:
        result = summarize("digits", args.budget, bench.strategies("digits", args.budget), slots)
        if args.fashion_budget:
            fashion = bench.strategies("fashion_mnist_small", args.fashion_budget)
            result["fashion_mnist_small"] = summarize(
                "fashion_mnist_small", args.fashion_budget, fashion, slots
            )
    finally:
        bench.executor.shutdown()
    result["total_wall_s"] = round(time.perf_counter() - t0, 1)
    result["latency"] = "TVM default schedules (tuning off) on x86/local, 1 thread, batch 1"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "search.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out / "search.png")
    r = result
    print(
        f"digits: final HV joint {r['hypervolume']['joint_nsga2'][-1]:.4f} random "
        f"{r['hypervolume']['random'][-1]:.4f} sequential {r['hypervolume']['sequential'][-1]:.4f}"
        f"; joint matches random's final at trial {r['trials_to_match_random_final']}; "
        f"overhead {r['overhead_fraction']:.1%}; total {r['total_wall_s']:.0f} s"
    )


if __name__ == "__main__":
    main()
