"""Fidelity benchmark: do hwnas's numbers survive someone re-measuring what it ships?

Runs two jobs through the service over REST (``hwnas serve`` on 127.0.0.1, embedded Ray, a fresh
database and tuning directory): the demo job (examples/demo-job.json) and a Fashion-MNIST
``cnn_joint`` job (8k-image subset, narrowed space, >= 20 trials, 16-, 8- and 4-bit stages
mixed). Every Pareto bundle is then pulled over the API and re-measured by
``bench/retime_bundle.py`` in a fresh process that does not import hwnas: the test accuracy of
each shipped file (ONNX Runtime, TorchScript, the TVM library) and the TVM library timed
interleaved with the shipped canary in several windows. A side experiment times the canary
beside a training process with and without the node's timing lease.

    python bench/fidelity.py --out bench/results       # both jobs (~60 min on 2 cores)
    python bench/fidelity.py --fashion-trials 0         # the demo job only

Writes ``fidelity.json`` (goals: F1 ``verified_within_10pct`` >= 0.95 and
``spearman_verified_vs_retimed`` >= 0.95; F2 ``spearman_search_vs_verified`` >= 0.9;
``numerics_failures`` 0) and ``fidelity.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._service import Service, pull  # noqa: E402

FASHION_JOB: dict[str, Any] = {
    "name": "fidelity-fashion",
    "dataset": "fashion_mnist_small",
    "space": "cnn_joint",
    "space_overrides": {
        "num_stages": [2],
        "stem_width": [8, 16],
        "depth": [1],
        "width": [16, 24, 32],
        "expand": [1, 3],
        "kernel": [3],
        "wbits": [4, 8, 16, 32],
        "codebook_bits": [0],  # the toolbox's newer dimensions off: the committed job's space
        "sparsity": [0.0],
        "kd_alpha": [0.5],
        "kd_relation": [0.0],
        "abits": [8, 16, 32],
        "prune": [0.0, 0.25, 0.5],
        "rank": [1.0, 0.5],
    },
    "profiles": ["x86/local"],
    "objectives": ["accuracy", "latency@x86/local", "size"],
    "budget": {"trials": 20, "tune_s": 900},
    "training": {"epochs": 3, "finetune_epochs": 1, "qat_epochs": 1},
    "sampler": "nsga2",
    "seed": 0,
}


def spearman(a: list[float], b: list[float]) -> float | None:
    if len(a) < 3:
        return None
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def within(a: float, b: float, tol: float = 0.10) -> bool:
    return abs(a / b - 1.0) <= tol


def test_split(dataset: str, path: Path) -> Path:
    """The job's test split as an .npz for the re-timer (same rows as the card's)."""
    from workers.data import load_splits

    if not path.is_file():
        test = load_splits(dataset, 0).test
        np.savez(path, x=test.x, y=test.y)
    return path


def numerics_failures(svc: Service, job_id: int) -> list[str]:
    trials = svc.client.get(f"/v1/jobs/{job_id}/trials").json()["data"]
    return [t["error"] for t in trials if t["error"] and "disagrees with PyTorch" in t["error"]]


def quiet_experiment(work: Path) -> dict[str, Any]:
    """The canary timed (a) alone, (b) beside a training process, (c) beside the same training
    holding the timing lease; CV and median per case, each in one run."""
    script = ROOT / "bench" / "_quiet.py"
    out = work / "quiet.json"
    subprocess.run([sys.executable, str(script), str(out)], check=True, cwd=ROOT)
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def run_jobs(a: argparse.Namespace) -> tuple[list[Any], list[Any], list[str]]:
    """Both jobs through the service; their Pareto bundles pulled; numerics failures."""
    svc = Service(a.work)
    jobs: list[dict[str, Any]] = []
    points: list[dict[str, Any]] = []
    failures: list[str] = []
    try:
        demo = json.loads((ROOT / "examples" / "demo-job.json").read_text())
        if a.demo_trials:
            demo["budget"]["trials"] = a.demo_trials
        specs = [demo]
        if a.fashion_trials:
            budget = {**FASHION_JOB["budget"], "trials": a.fashion_trials}
            specs.append({**FASHION_JOB, "budget": budget})
        for spec in specs:
            run = svc.run_job(spec, deadline_s=60 * 60)
            report = svc.client.get(f"/v1/jobs/{run['id']}/report").json()
            pts = pull(svc, run["id"], a.work / "bundles")
            for p in pts:
                p["dataset"] = spec["dataset"]
            points += pts
            failures += numerics_failures(svc, run["id"])
            jobs.append(
                {
                    "name": spec["name"],
                    "id": run["id"],
                    "trials": spec["budget"]["trials"],
                    "wall_s": run["wall_s"],
                    "report": report,
                    "verification": pts[0]["verification"] if pts else None,
                }
            )
    finally:
        svc.stop()
    return jobs, points, failures


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--work", type=Path, default=ROOT / "hwnas-data" / "bench-fidelity")
    ap.add_argument("--fashion-trials", type=int, default=20)
    ap.add_argument("--demo-trials", type=int, default=None, help="default: the demo's own")
    ap.add_argument("--windows", type=int, default=5, help="re-timing windows per bundle")
    ap.add_argument("--retime-only", action="store_true", help="re-measure the last run's bundles")
    a = ap.parse_args()
    if not a.retime_only:
        shutil.rmtree(a.work, ignore_errors=True)
        a.work.mkdir(parents=True)
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    state = a.work / "jobs.json"
    if not a.retime_only:
        quiet = quiet_experiment(a.work)
        print(f"quiet experiment: {quiet}", flush=True)
        jobs, points, failures = run_jobs(a)
        saved = {"quiet": quiet, "jobs": jobs, "points": points, "failures": failures}
        state.write_text(json.dumps(saved))
    saved = json.loads(state.read_text())
    quiet, jobs, points, failures = (saved[k] for k in ("quiet", "jobs", "points", "failures"))
    datasets = {p["dataset"] for p in points}
    tests = {ds: test_split(ds, a.work / f"test-{ds}.npz") for ds in datasets}
    manifest = a.work / "manifest.json"
    items = [{"bundle": p["bundle"], "test": str(tests[p["dataset"]])} for p in points]
    manifest.write_text(json.dumps(items))
    retimed = a.work / "retimed.json"
    script = str(ROOT / "bench" / "retime_bundle.py")
    cmd = [sys.executable, script, "--manifest", str(manifest), "--out", str(retimed)]
    env = {**os.environ, "TVM_NUM_THREADS": "1", "PYTHONPATH": ""}
    # a fresh process, run outside the repository: it cannot import hwnas
    subprocess.run([*cmd, "--windows", str(a.windows)], check=True, env=env, cwd="/")
    re = json.loads(retimed.read_text())["bundles"]
    rows = [_row(p, re[p["bundle"]]) for p in points]
    result = summarize(rows, quiet, jobs, failures, time.monotonic() - t0)
    (a.out / "fidelity.json").write_text(json.dumps(result, indent=2))
    plot(rows, a.out / "fidelity.png")
    print(json.dumps({k: v for k, v in result.items() if k not in ("points", "jobs")}, indent=2))
    return 0


def _row(p: dict[str, Any], r: dict[str, Any]) -> dict[str, Any]:
    prof = r["profile"]
    v = p["verified"][prof]
    return {
        "model_id": p["model_id"],
        "dataset": p["dataset"],
        "summary": p["summary"],
        "verified_ms": v["median_ms"],
        "verified_normalized": v["normalized"],
        "search_ms": v["search_ms"],
        "search_normalized": v["search_normalized"],
        "retimed_ms": r["retimed_ms"],
        "retimed_normalized": r["retimed_normalized"],
        "retimed_canary_ms": r["canary_ms"],
        "retime_windows": r["windows"],
        "dense_ms": v["dense_ms"],
        "speedup_vs_dense": v["speedup_vs_dense"],
        "no_speedup": v["no_speedup"],
        "latency_disagrees": v["disagrees"],
        "size_bytes": p["size_bytes"],
        "size_ratio_vs_dense": p["size_ratio_vs_dense"],
        "acc_card": p["test_accuracy"],
        "acc_card_ci95": p["test_accuracy_ci95"],
        "acc_onnx": r["acc_onnx"],
        "acc_torchscript": r["acc_torchscript"],
        "acc_tvm": r["acc_tvm"],
    }


# Below this verified latency (ms) a model runs in microseconds and timer noise dominates.
SMALL_MS = 0.05


def shortfalls(
    f1: float,
    rho: float | None,
    rho_search: float | None,
    n_failures: int,
    small: list[dict[str, Any]],
    f1_of: Any,
) -> list[dict[str, Any]]:
    """Each goal this run missed, with the measured value and what the data says about why."""
    out: list[dict[str, Any]] = []
    if f1 < 0.95:
        out.append(
            {
                "goal": "verified_within_10pct",
                "value": f1,
                "target": 0.95,
                "why": f"{len(small)} points run under {SMALL_MS} ms; within 10% among them: "
                f"{f1_of(small)}",
            }
        )
    if rho is None or rho < 0.95:
        out.append({"goal": "spearman_verified_vs_retimed", "value": rho, "target": 0.95})
    if rho_search is None or rho_search < 0.9:
        out.append({"goal": "spearman_search_vs_verified", "value": rho_search, "target": 0.9})
    if n_failures:
        out.append({"goal": "numerics_failures", "value": n_failures, "target": 0})
    return out


def summarize(
    rows: list[dict[str, Any]],
    quiet: dict[str, Any],
    jobs: list[dict[str, Any]],
    failures: list[str],
    wall: float,
) -> dict[str, Any]:
    vn = [r["verified_normalized"] for r in rows]
    rn = [r["retimed_normalized"] for r in rows]
    sn = [r["search_normalized"] for r in rows]
    f1 = float(np.mean([within(a, b) for a, b in zip(vn, rn, strict=True)])) if rows else 0.0
    raw = float(np.mean([within(r["verified_ms"], r["retimed_ms"]) for r in rows])) if rows else 0.0
    canary_cv = [
        float(np.std(c, ddof=1) / np.mean(c))
        for c in ([w["canary_ms"] for w in r["retime_windows"]] for r in rows)
        if len(c) > 1
    ]
    small = [r for r in rows if r["verified_ms"] < SMALL_MS]
    large = [r for r in rows if r["verified_ms"] >= SMALL_MS]

    def f1_of(sel: list[dict[str, Any]]) -> float | None:
        ok = [within(r["verified_normalized"], r["retimed_normalized"]) for r in sel]
        return float(np.mean(ok)) if ok else None

    off = [
        r
        for r in rows
        if max(abs(r[k] - r["acc_card"]) for k in ("acc_onnx", "acc_torchscript", "acc_tvm"))
        > 0.002
    ]
    return {
        "verified_within_10pct": f1,
        "verified_within_10pct_small": f1_of(small),
        "verified_within_10pct_large": f1_of(large),
        "small_ms": SMALL_MS,
        "points_small": len(small),
        "points_large": len(large),
        "shortfalls": shortfalls(
            f1, spearman(vn, rn), spearman(sn, vn), len(failures), small, f1_of
        ),
        "spearman_verified_vs_retimed": spearman(
            [r["verified_ms"] for r in rows], [r["retimed_ms"] for r in rows]
        ),
        "spearman_verified_vs_retimed_normalized": spearman(vn, rn),
        "raw_within_10pct": raw,
        "canary_cv_across_windows": float(np.median(canary_cv)) if canary_cv else None,
        "spearman_search_vs_verified": spearman(sn, vn),
        "spearman_search_vs_verified_raw": spearman(
            [r["search_ms"] for r in rows], [r["verified_ms"] for r in rows]
        ),
        "search_within_10pct_of_verified": float(
            np.mean([within(a, b) for a, b in zip(sn, vn, strict=True)])
        )
        if rows
        else 0.0,
        "no_speedup_points": sum(bool(r["no_speedup"]) for r in rows),
        "disagreeing_points": sum(bool(r["latency_disagrees"]) for r in rows),
        "files_off_the_card": len(off),
        "numerics_failures": len(failures),
        "numerics_failure_messages": failures,
        "quiet_timing": quiet,
        "goals": {
            "verified_within_10pct": 0.95,
            "spearman_verified_vs_retimed": 0.95,
            "spearman_search_vs_verified": 0.9,
            "numerics_failures": 0,
        },
        "jobs": jobs,
        "points": rows,
        "wall_s": round(wall, 1),
        "machine": _machine(),
    }


def _machine() -> dict[str, Any]:
    import platform

    flags = (
        Path("/proc/cpuinfo").read_text().split("flags")[1].split("\n")[0]
        if Path("/proc/cpuinfo").is_file()
        else ""
    )
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "amx_int8") if f" {f}" in flags]
    return {"cpus": os.cpu_count(), "machine": platform.machine(), "isa": isa}


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(16, 5))
    for ds, marker in (("digits", "o"), ("fashion_mnist_small", "s")):
        sel = [r for r in rows if r["dataset"] == ds]
        if not sel:
            continue
        ax[0].scatter(
            [r["verified_normalized"] for r in sel],
            [r["retimed_normalized"] for r in sel],
            marker=marker,
            label=ds,
        )
        ax[1].scatter(
            [r["search_normalized"] for r in sel],
            [r["verified_normalized"] for r in sel],
            marker=marker,
            label=ds,
        )
        ax[2].scatter(
            [r["speedup_vs_dense"] for r in sel],
            [r["size_ratio_vs_dense"] or 1 for r in sel],
            marker=marker,
            label=ds,
        )
    for a_, (x, y) in zip(
        ax[:2],
        (("verified", "re-timed (fresh process, no hwnas)"), ("search-time", "verified")),
        strict=True,
    ):
        lo = min(min(a_.get_xlim()), min(a_.get_ylim()))
        hi = max(max(a_.get_xlim()), max(a_.get_ylim()))
        a_.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        a_.plot([lo, hi], [lo * 1.1, hi * 1.1], "k:", lw=0.6)
        a_.plot([lo, hi], [lo / 1.1, hi / 1.1], "k:", lw=0.6)
        a_.set_xscale("log")
        a_.set_yscale("log")
        a_.set_xlabel(f"{x} latency / canary")
        a_.set_ylabel(f"{y} latency / canary")
        a_.legend()
    ax[0].set_title("F1: verified vs re-timed (+-10 % dotted)")
    ax[1].set_title("F2: search-time vs verified")
    ax[2].axvline(1.05, color="r", lw=0.8)
    ax[2].set_xlabel("speedup vs dense fp32 parent (same window)")
    ax[2].set_ylabel("size ratio vs dense")
    ax[2].set_title("Pareto points: compiled speedup and size vs dense")
    ax[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
