"""How hwnas's throughput grows with Ray worker nodes, and what the scheduler itself costs.

    make bench-scale          # -> bench/results/scale.json + scale.png (~15 min on 2 cores)

Every part runs the real scheduler (``JobController``: Optuna study in SQLite, trial rows,
fencing, heartbeats) against a real multi-node Ray cluster on this machine
(``ray.cluster_utils``: a head with no CPUs plus worker nodes, each its own raylet and object
store; they talk over the host's own address, so no traffic leaves the machine):

(a) **Dispatch scaling.** 1, 2, 4 and 8 worker nodes of 1 CPU each; every trial is a Ray
    task that sleeps ``SLEEP_S`` (1 s) and returns synthetic metrics, so the 2 cores of this
    machine don't bound it: what is measured is the scheduler, Ray and the database.
    ``efficiency_vs_linear[i] = trials_per_hour[i] / (nodes[i] * trials_per_hour[0])``.
(b) **The real 1 -> 2 node step.** The same real digits trials (training, compression, TVM
    probe; untuned), same seed and so the same candidates, on 1 and 2 worker nodes of 1 CPU,
    run 1, 2, 2, 1: ``cpu_bound_1_to_2 = mean saturated trials_per_hour(2) / (2 * mean of 1)``,
    each adjacent pair's ratio beside it (the spread). Saturated: trials completed up to the
    job's last dispatch over that time. These trials vary 10x in length (2-20 s), so a
    16-trial job's drain (one long trial last, the other node idle) would otherwise weigh
    like a property of the nodes; ``cpu_bound_1_to_2_whole_job`` is the ratio with it.
(c) **The scheduler's own cost** with 64 and 256 trials in flight. 256 Ray worker processes
    don't fit 24 GiB, so the trials are calls on one async Ray actor (``max_concurrency``)
    that sleep ``HOLD_S`` (60 s; real trials took ~45 s each in ``make compose-test`` and ~2 min
    in ``make demo``); results still come back as Ray object
    refs through the scheduler's wait / get / tell path. ``ROUNDS`` rounds of trials run.
    ``overhead_fraction`` is the steady-state share of throughput lost to the scheduler: over
    the middle rounds (from the first round's last completion to the last round's first),
    ``1 - (ROUNDS - 2) * HOLD_S / that span``. ``overhead_with_fill`` is the same over the
    whole job, including filling the slots one dispatch at a time at the start and the drain.

Throughput is trials over the span from the first trial's start to the last one's completion
(the trials' own timestamps in the study), so job set-up is not in it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a loopback cluster of this process's own

SLEEP_S = 1.0  # (a): one trial's task
TRIALS_PER_NODE = 40  # (a): per phase, nodes x this trials
NODES = [1, 2, 4, 8]
REAL_TRIALS = 16  # (b): per phase
HOLD_S = 60.0  # (c): a trial's time in flight (real: ~45 s in compose-test, ~2 min in the demo)
IN_FLIGHT = [64, 256]
ROUNDS = 4  # (c): trials = in_flight x this; the 2 middle rounds are the steady state

REAL_SPEC: dict[str, Any] = {  # (b): the compose test's job, untuned (a CNN or an MLP)
    "dataset": "digits",
    "space": "small_joint",
    "space_overrides": {"cnn.depth": [1, 2], "mlp.depth": [1, 2]},
    "profiles": ["x86/local"],
    "objectives": ["accuracy", "latency@x86/local", "size"],
    "training": {"epochs": 120, "finetune_epochs": 10},  # CPU-bound: seconds of training each
    "tuning": "off",
    "sampler": "random",
    "seed": 0,
}
SPEC: dict[str, Any] = {
    "dataset": "digits",
    "space": "mlp_small",
    "profiles": ["x86/local"],
    "objectives": ["accuracy", "size"],
    "tuning": "off",
    "prefilter": False,
    "sampler": "random",
    "seed": 0,
}


def _synthetic(request: dict[str, Any], node: str) -> dict[str, Any]:
    """An EvalResult (as JSON) whose metrics are a hash of the candidate: nothing trained."""
    import hashlib

    digest = hashlib.sha256(json.dumps(request["candidate"], sort_keys=True).encode()).digest()
    return {
        "prefiltered": False,
        "metrics": {
            "accuracy": 0.5 + digest[0] / 512,
            "size_bytes": 1000 + int.from_bytes(digest[1:3], "big"),
            "macs": 1,
            "bitops": 1,
        },
        "latency": {},
        "node": node,
        "timings": {},
        "cpu_s": {},
        "device_s": {},
    }


def sleep_trial(request: dict[str, Any]) -> dict[str, Any]:
    """(a)'s Ray task: hold one CPU slot for SLEEP_S, then report synthetic metrics."""
    import ray

    time.sleep(SLEEP_S)
    return _synthetic(request, ray.get_runtime_context().get_node_id()[:8])


class HoldPool:
    """(c)'s async actor: every call holds a slot for HOLD_S without a process of its own."""

    async def run(self, request: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(HOLD_S)
        return _synthetic(request, "hold-pool")


def _cluster(nodes: int) -> Any:
    from ray.cluster_utils import Cluster

    store = 80 * 2**20
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "object_store_memory": store,
            "include_dashboard": False,
        },
    )
    for _ in range(nodes):
        cluster.add_node(num_cpus=1, object_store_memory=store)
    cluster.wait_for_nodes()
    return cluster


def _job(url: str, spec: dict[str, Any]) -> int:
    from service.db import accounts, crud
    from service.db.queue import claim_job
    from service.db.session import get_sessionmaker
    from service.schemas import JobSpec

    with get_sessionmaker(url)() as s:
        job = crud.create_job(
            session=s,
            job_in=JobSpec.model_validate(spec),
            owner_id=accounts.admin_user(session=s).id,
        )
        claimed = claim_job(session=s, worker_id="bench-scale", stale_after_s=600)
        assert claimed is not None and claimed.id == job.id
        return job.id


def run_job(
    work: Path, spec: dict[str, Any], executor_factory: Any, **settings: Any
) -> dict[str, Any]:
    """One job to its end on a fresh SQLite database; its trials' span and throughput."""
    import optuna

    from service.db.migrate import upgrade
    from service.scheduler.controller import JobController
    from service.scheduler.study import get_storage, study_name
    from service.settings import Settings

    work.mkdir(parents=True)
    url = f"sqlite:///{work / 'hwnas.db'}"
    upgrade(url)
    get_storage(url)
    s = Settings(
        database_url=url,
        artifact_dir=work / "art",
        tuning_dir=work / "tuning",
        probe_cache_dir=work / "probe-cache",
        verify=False,
        poll_interval_s=0.5,
        **settings,
    )
    job_id = _job(url, spec)
    executor = executor_factory(s)
    cpu0, t0 = time.process_time(), time.perf_counter()
    status = JobController(s, executor, job_id, "bench-scale").run()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    study = optuna.load_study(study_name=study_name(job_id), storage=get_storage(url))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    start = min(t.datetime_start for t in done if t.datetime_start)
    end = max(t.datetime_complete for t in done if t.datetime_complete)
    span = (end - start).total_seconds()
    completions = sorted(
        (t.datetime_complete - start).total_seconds() for t in done if t.datetime_complete
    )
    # saturated: up to the last dispatch every slot was busy; after it the job drains (slots
    # go idle as the budget runs out), which depends on the job's size, not on the nodes
    last = max((t.datetime_start - start).total_seconds() for t in done if t.datetime_start)
    before = sum(1 for c in completions if c <= last)
    return {
        "completions_s": completions,
        "saturated_s": round(last, 2),
        "trials_per_hour_saturated": round(before * 3600 / last, 1) if before else None,
        "status": str(status.value if hasattr(status, "value") else status),
        "trials": len(done),
        "span_s": round(span, 2),
        "job_wall_s": round(wall, 2),
        "trials_per_hour": round(len(done) * 3600 / span, 1),
        "scheduler_cpu_s": round(cpu, 2),
        "nodes_used": sorted({t.user_attrs.get("node", "?") for t in done}),
    }


def on_nodes(n: int, work: Path, spec: dict[str, Any], task: Any = None) -> dict[str, Any]:
    """One job on a fresh cluster of ``n`` worker nodes (trials: ``task``, default the real
    evaluation); the cluster is shut down after."""
    import ray

    from service.scheduler.executor import RayExecutor

    cluster = _cluster(n)
    try:
        row = run_job(work, spec, lambda s: RayExecutor(s, task=task), ray_address=cluster.address)
    finally:
        ray.shutdown()
        cluster.shutdown()
    row["nodes"] = n
    row.pop("completions_s")
    return row


def dispatch_scaling(work: Path, log: logging.Logger) -> list[dict[str, Any]]:
    rows = []
    for n in NODES:
        spec = {**SPEC, "budget": {"trials": TRIALS_PER_NODE * n, "tune_s": 0}}
        rows.append(on_nodes(n, work / f"a-{n}", spec, sleep_trial))
        log.info("(a) %d nodes: %s", n, rows[-1])
    return rows


def real_step(work: Path, log: logging.Logger) -> list[dict[str, Any]]:
    """(b): 1 and 2 nodes in the order 1, 2, 2, 1 (drift of this shared machine cancels)."""
    rows = []
    for k, n in enumerate((1, 2, 2, 1)):
        spec = {**REAL_SPEC, "budget": {"trials": REAL_TRIALS, "tune_s": 0}}
        rows.append(on_nodes(n, work / f"b-{k}-{n}", spec))
        log.info("(b) %d nodes: %s", n, rows[-1])
    return rows


def _step_efficiency(
    rows: list[dict[str, Any]], key: str = "trials_per_hour_saturated"
) -> tuple[float, list[float]]:
    """(b)'s 1 -> 2 efficiency: of the mean throughputs, and of each adjacent 1/2 pair."""
    one = [r[key] for r in rows if r["nodes"] == 1]
    two = [r[key] for r in rows if r["nodes"] == 2]
    if None in one + two:  # a job too short to have finished a trial before its last dispatch
        raise ValueError(f"(b): no saturated throughput in {rows}; more REAL_TRIALS")
    pairs = [round(b / (2 * a), 3) for a, b in zip(one, two, strict=True)]
    return round(sum(two) / (2 * sum(one)), 3), pairs


def scheduler_cost(work: Path, log: logging.Logger) -> list[dict[str, Any]]:
    import ray

    from service.scheduler.executor import RayExecutor

    class PoolExecutor(RayExecutor):
        """RayExecutor whose trials are calls on HoldPool (object refs all the same)."""

        def __init__(self, settings: Any, in_flight: int) -> None:
            self.in_flight = in_flight  # capacity_for, called from RayExecutor's __init__
            super().__init__(settings)
            self._pool = (
                ray.remote(HoldPool).options(num_cpus=0, max_concurrency=in_flight + 8).remote()  # type: ignore[attr-defined]
            )
            self.in_flight = in_flight

        def capacity_for(self, gpus: float) -> int:
            return self.in_flight

        def submit(self, request: Any) -> Any:
            return self._pool.run.remote(request.model_dump(mode="json"))

    rows = []
    cluster = _cluster(1)
    try:
        for k in IN_FLIGHT:
            spec = {**SPEC, "budget": {"trials": k * ROUNDS, "tune_s": 0}}
            row = run_job(
                work / f"c-{k}",
                spec,
                lambda s, k=k: PoolExecutor(s, k),
                ray_address=cluster.address,
            )
            done = row.pop("completions_s")
            # steady state: the rounds between the first and the last (no fill, no drain)
            middle = done[(ROUNDS - 1) * k - 1] - done[k - 1]
            row.update(
                in_flight=k,
                hold_s=HOLD_S,
                ideal_span_s=row["trials"] * HOLD_S / k,
                overhead_fraction=round(1 - (ROUNDS - 2) * HOLD_S / middle, 4),
                overhead_with_fill=round(1 - row["trials"] * HOLD_S / (k * row["span_s"]), 4),
                fill_s=round(done[k - 1] - HOLD_S, 2),
                scheduler_cpu_ms_per_trial=round(1000 * row["scheduler_cpu_s"] / row["trials"], 1),
                scheduler_busy=round(row["scheduler_cpu_s"] / row["job_wall_s"], 3),
            )
            rows.append(row)
            log.info("(c) %d in flight: %s", k, row)
    finally:
        ray.shutdown()
        cluster.shutdown()
    return rows


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.5))
    nodes, tph = result["nodes"], result["trials_per_hour"]
    ax1.plot(nodes, tph, "o-", label="measured (1 s sleep-bound trials)")
    ax1.plot(nodes, [tph[0] * n for n in nodes], "--", color="grey", label="linear from 1 node")
    ax1.set(xlabel="Ray worker nodes (1 CPU each)", ylabel="trials per hour", xticks=nodes)
    ax1.set_title("(a) dispatch scaling")
    ax1.legend()
    ax2.bar([str(n) for n in nodes], result["efficiency_vs_linear"], color="tab:blue")
    ax2.axhline(0.8, color="red", ls=":", label="goal 0.8")
    ax2.set(xlabel="nodes", ylabel="efficiency vs linear", ylim=(0, 1.1))
    ax2.set_title(f"(a) efficiency; (b) real 1->2 nodes: {result['cpu_bound_1_to_2']}")
    ax2.legend()
    cost = result["scheduler_cost"]
    xs = range(len(cost))
    ax3.bar([x - 0.2 for x in xs], [r["overhead_fraction"] for r in cost], 0.4, label="steady")
    ax3.bar([x + 0.2 for x in xs], [r["overhead_with_fill"] for r in cost], 0.4, label="with fill")
    ax3.set_xticks(list(xs), [str(r["in_flight"]) for r in cost])
    ax3.axhline(0.05, color="red", ls=":", label="goal 0.05")
    ax3.set(xlabel="trials in flight", ylabel="throughput lost to the scheduler")
    ax3.set_title(f"(c) scheduler overhead ({HOLD_S:.0f} s trials)")
    ax3.legend()
    fig.suptitle(f"hwnas scale bench on {result['machine']['cpus']} CPUs ({platform.node()})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--parts", default="abc", help="which parts to run (default: all)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: few trials, 1-2 nodes")
    ap.add_argument("--in-flight", type=int, nargs="+", help="(c) only these (profiling)")
    ap.add_argument("--hold-s", type=float, help="(c) a trial's hold (profiling)")
    args = ap.parse_args()
    global TRIALS_PER_NODE, NODES, REAL_TRIALS, HOLD_S, IN_FLIGHT, ROUNDS
    IN_FLIGHT = args.in_flight or IN_FLIGHT
    HOLD_S = args.hold_s or HOLD_S
    if args.quick:
        TRIALS_PER_NODE, NODES, REAL_TRIALS, HOLD_S, IN_FLIGHT, ROUNDS = 5, [1, 2], 2, 3.0, [8], 3
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    log = logging.getLogger("bench.scale")
    log.setLevel(logging.INFO)
    work = Path(tempfile.mkdtemp(prefix="hwnas-bench-scale-"))
    t0 = time.perf_counter()
    a = dispatch_scaling(work, log) if "a" in args.parts else []
    b = real_step(work, log) if "b" in args.parts else []
    c = scheduler_cost(work, log) if "c" in args.parts else []
    base = a[0]["trials_per_hour"] if a else None
    result: dict[str, Any] = {
        "nodes": [r["nodes"] for r in a],
        "trials_per_hour": [r["trials_per_hour"] for r in a],
        "efficiency_vs_linear": [
            round(r["trials_per_hour"] / (r["nodes"] * base), 3) for r in a if base
        ],
        "efficiency_vs_ideal": [
            round(r["trials_per_hour"] / (r["nodes"] * 3600 / SLEEP_S), 3) for r in a
        ],
        "cpu_bound_1_to_2": _step_efficiency(b)[0] if b else None,
        "cpu_bound_1_to_2_pairs": _step_efficiency(b)[1] if b else None,
        "cpu_bound_1_to_2_whole_job": _step_efficiency(b, "trials_per_hour")[0] if b else None,
        "overhead_fraction": c[-1]["overhead_fraction"] if c else None,
        "goals": {"efficiency_vs_linear": 0.8, "cpu_bound_1_to_2": 0.8, "overhead_fraction": 0.05},
        "overhead_in_flight": c[-1]["in_flight"] if c else None,
        "dispatch_scaling": a,
        "cpu_bound": b,
        "scheduler_cost": c,
        "settings": {
            "sleep_s": SLEEP_S,
            "trials_per_node": TRIALS_PER_NODE,
            "real_trials": REAL_TRIALS,
            "hold_s": HOLD_S,
            "rounds": ROUNDS,
            "database": "SQLite (one file per phase)",
            "sampler": SPEC["sampler"],
            "real_trial": f"{REAL_SPEC['space']} on {REAL_SPEC['dataset']}, tuning off, 1 thread",
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        },
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.json").write_text(json.dumps(result, indent=2) + "\n")
    if a and b and c:
        plot(result, args.out / "scale.png")
    print(
        f"nodes {result['nodes']} trials/h {result['trials_per_hour']} "
        f"efficiency {result['efficiency_vs_linear']}; cpu-bound 1->2 "
        f"{result['cpu_bound_1_to_2']}; overhead at 256 in flight {result['overhead_fraction']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
