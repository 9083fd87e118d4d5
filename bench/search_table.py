"""Grow the table of real evaluations behind the search benchmark's surrogate (resumable).

Each chunk is one real job of the service (random sampler, a fresh seed per chunk): candidates
are trained, compressed, fine-tuned and TVM-probed exactly as a search measures them, latency
from a pre-tuned MetaSchedule database (``--tuning-dir``, filled by ``hwnas tune-profile``) with
no further tuning per trial, so a candidate whose tasks the database lacks runs those on TVM's
default schedules and is stored ``partial``. Every COMPLETE trial becomes one JSON line of
``bench/data/search_table/<table>.jsonl``: its parameters, candidate, hash, objectives, latency
spread and canary-normalised latency, the tuned-task count, in-task seconds and the machine.
Chunk ``k`` first re-measures the table's first candidate (``reference: true``), which gives
run-to-run noise and lets chunks from different machines be put on one scale (the canary
normalisation does the same per probe).

``--fraction F`` instead re-evaluates rows that lack one at a fraction F of the training epochs
(the low rung of successive halving), stored with ``"fraction": F``.

Run it again to add rows: finished chunks stay, an interrupted chunk is run again.

    python bench/search_table.py --table digits --rows 300
    python bench/search_table.py --table digits --fraction 0.34 --rows 60
    python bench/search_table.py --table fashion --rows 100
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import socket
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _jobs import PROFILE, Bench  # noqa: E402

from service.schemas.jobs import Training  # noqa: E402

log = logging.getLogger("bench.search_table")
DATA = Path(__file__).resolve().parent / "data" / "search_table"

TABLES: dict[str, dict[str, Any]] = {
    "digits": {
        "dataset": "digits",
        "space": "small_joint",
        "space_overrides": {},
        "training": {"epochs": 20, "finetune_epochs": 6},
    },
    "fashion": {  # narrowed so a trial takes about a minute of one core here
        "dataset": "fashion_mnist_small",
        "space": "cnn_joint",
        "space_overrides": {
            "num_stages": [2],
            "depth": [1],
            "width": [16, 24, 32],
            "expand": [1, 3],
        },
        "training": {"epochs": 2, "finetune_epochs": 1, "batch_size": 128, "qat_epochs": 1},
    },
}


def table_path(table: str) -> Path:
    return DATA / f"{table}.jsonl"


def read_table(table: str) -> list[dict[str, Any]]:
    path = table_path(table)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def base_spec(table: str, seed: int, trials: int) -> dict[str, Any]:
    cfg = TABLES[table]
    return {
        "name": f"table-{table}-{seed}",
        "dataset": cfg["dataset"],
        "space": cfg["space"],
        "space_overrides": cfg["space_overrides"],
        "profiles": [PROFILE],
        "objectives": ["accuracy", f"latency@{PROFILE}", "size"],
        "budget": {"trials": trials, "tune_s": 0},  # the pre-tuned database only
        "training": cfg["training"],
        "tuning": "metaschedule",
        "sampler": "random",
        "seed": seed,
    }


def machine() -> dict[str, Any]:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")),
        "",
    )
    flags = cpuinfo
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "amx_tile") if f" {f}" in flags]
    return {
        "host": socket.gethostname(),
        "cpu": model or platform.processor(),
        "isa": isa,
        "cores": os.cpu_count(),
    }


def to_rows(
    run: dict[str, Any], table: str, chunk: int, seed: int, fraction: float, mach: dict[str, Any]
) -> list[dict[str, Any]]:
    out = []
    for r in run["rows"]:
        if r["state"] != "complete":
            continue
        m, lat = r["metrics"], (r["latency"] or {})[PROFILE]
        out.append(
            {
                "table": table,
                "chunk": chunk,
                "seed": seed,
                "trial": r["number"],
                "fraction": fraction,
                "params": r["params"],
                "candidate_hash": r["candidate_hash"],
                "candidate": r["candidate"],
                "accuracy": m["accuracy"],
                "test_accuracy": m.get("test_accuracy"),
                "size_bytes": m["size_bytes"],
                "macs": m.get("macs"),
                "bitops": m.get("bitops"),
                "latency_ms": lat["median_ms"],
                "latency_iqr_ms": lat["iqr_ms"],
                "latency_normalized": lat.get("normalized"),
                "canary_ms": lat.get("canary_ms"),
                "partial": bool(lat.get("partial")),
                "tasks": lat.get("tasks"),
                "tasks_found_tuned": lat.get("tasks_found_tuned"),
                "latency_source": lat.get("latency_source"),
                "trial_s": round(r["trial_s"], 2),
                "timings": (r["timings"] or {}).get("runs", [{}])[-1].get("timings"),
                "machine": mach,
            }
        )
    return out


def grow(args: argparse.Namespace) -> None:
    work = args.work / args.table
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(work, args.tuning_dir)
    mach = machine()
    table_path(args.table).parent.mkdir(parents=True, exist_ok=True)
    try:
        while True:
            rows = read_table(args.table)
            chunk = 1 + max((r["chunk"] for r in rows), default=-1)
            seed = 1000 * (1 + list(TABLES).index(args.table)) + chunk
            full = [r for r in rows if r["fraction"] == 1.0]
            if args.fraction >= 1.0:
                have = len({r["candidate_hash"] for r in full})
                if have >= args.rows:
                    break
                trials = min(args.chunk, args.rows - have + (1 if full else 0))
                enqueue = [full[0]["params"]] if full else []
                spec = base_spec(args.table, seed, trials)
            else:
                done = {r["candidate_hash"] for r in rows if r["fraction"] == args.fraction}
                todo = [
                    r for r in full if r["candidate_hash"] not in done and not r.get("reference")
                ]
                if len(done) >= args.rows or not todo:
                    break
                todo = todo[: min(args.chunk, args.rows - len(done))]
                enqueue = [r["params"] for r in todo]
                spec = base_spec(args.table, seed, len(todo))
                spec["training"] = _scaled(spec["training"], args.fraction)
            t0 = time.perf_counter()
            run = bench.job(spec["name"], spec, store="store", enqueue=enqueue)
            new = to_rows(run, args.table, chunk, seed, args.fraction, mach)
            if args.fraction >= 1.0 and full and new:
                new[0]["reference"] = new[0]["candidate_hash"] == full[0]["candidate_hash"]
            with table_path(args.table).open("a") as f:  # whole chunks only
                for row in new:
                    f.write(json.dumps(row) + "\n")
            log.info(
                "%s chunk %d: %d rows in %.0f s (table now %d lines)",
                args.table,
                chunk,
                len(new),
                time.perf_counter() - t0,
                len(rows) + len(new),
            )
            if args.budget_s and time.perf_counter() - START > args.budget_s:
                log.info("time budget spent: stopping after a whole chunk")
                break
    finally:
        bench.shutdown()


def _scaled(training: dict[str, Any], fraction: float) -> dict[str, Any]:
    """The training settings at ``fraction`` of the epochs, rounded as the workers round a
    successive-halving rung (``workers.evaluate._scaled``)."""
    out = {"qat_epochs": Training().qat_epochs, **training}
    out["epochs"] = max(1, math.ceil(out["epochs"] * fraction))
    for k in ("finetune_epochs", "qat_epochs"):
        out[k] = math.ceil(out[k] * fraction)
    return out


START = time.perf_counter()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", choices=sorted(TABLES), required=True)
    ap.add_argument("--rows", type=int, required=True, help="distinct candidates to reach")
    ap.add_argument("--chunk", type=int, default=20, help="trials per job")
    ap.add_argument("--fraction", type=float, default=1.0, help="epochs fraction (< 1: low rung)")
    ap.add_argument("--budget-s", type=float, default=0, help="stop after the chunk that passes it")
    ap.add_argument(
        "--work",
        type=Path,
        default=Path(
            os.environ.get("HWNAS_TABLE_WORK", "~/.cache/hwnas/search-table")
        ).expanduser(),
        help="jobs database, parent and probe caches (kept between runs)",
    )
    ap.add_argument(
        "--tuning-dir",
        type=Path,
        default=Path(os.environ.get("HWNAS_TUNING_DIR", "hwnas-data/tuning")),
        help="the pre-tuned MetaSchedule databases (hwnas tune-profile)",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("optuna", "service.scheduler", "tvm", "workers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    grow(args)


if __name__ == "__main__":
    main()
