"""Your model, compressed: trained networks uploaded over the API and searched, each point
compared with the uploaded model and re-scored outside hwnas.

Trains two networks on Fashion-MNIST at 3x32x32 (images padded 28 -> 32, grey replicated to 3
channels; 8,000 training, 2,000 validation and 2,000 test images): a ResNet-18 layout (CIFAR
stem, width multiplier 0.25: channels 16-32-64-128) and a MobileNetV2 (width 0.5, stride-1
stem). Each is exported as a user would (``torch.export`` with a dynamic batch,
``torch.export.save``), uploaded with the dataset over the API of a fresh ``hwnas serve``, and
compressed by a 16-trial job on ``x86/local`` (MetaSchedule-tuned probes, the front verified
after the job, so speedups are against the uploaded model timed the same way). Before each
job, the profile's tuning database is prepared for the network's shapes as an operator would
(``hwnas tune-profile x86/local --network user/<name>``: sampled candidates of the job's space
and the uploaded model itself, within a budget): its seconds are reported apart from the
trials'. Every front bundle is then re-scored by ``bench/retime_bundle.py`` in a process that
does not import hwnas.

    python bench/networks.py --out bench/results          # make bench-networks (<= 120 min)

Writes ``networks.json`` and ``networks.png``. Goals per network: a point >= 2x faster and one
>= 4x smaller within 1 point of the uploaded model's validation accuracy; median trial <= 120 s
with 2 in flight; every front file within 0.002 of its card.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._service import Service, pull  # noqa: E402

PROFILE = "x86/local"
FASHION = Path(os.environ.get("HWNAS_DATA_DIR", "/usr/share/datasets/fashion-mnist"))
SPEED_GOAL, SIZE_GOAL, TRIAL_GOAL_S, WITHIN = 2.0, 4.0, 120.0, 0.01
NETWORKS: dict[str, dict[str, Any]] = {
    "resnet18": {"width": 0.25, "what": "ResNet-18 layout, CIFAR stem, width 0.25 (16-128)"},
    "mobilenetv2": {"width": 0.5, "what": "MobileNetV2, width 0.5, stride-1 stem"},
}


def _idx(name: str) -> np.ndarray:
    raw = gzip.open(FASHION / name).read()
    n = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(n)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * n).reshape(dims)


def _rgb32(x: np.ndarray) -> np.ndarray:
    """(N, 28, 28) uint8 -> (N, 3, 32, 32) uint8: padded by 2 pixels, grey in 3 channels."""
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2)))
    return np.repeat(padded[:, None], 3, axis=1)


def fashion32(train: int, val: int, test: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    x, y = _idx("train-images-idx3-ubyte.gz"), _idx("train-labels-idx1-ubyte.gz")
    rows = rng.permutation(len(y))[: train + val]
    xt, yt = _idx("t10k-images-idx3-ubyte.gz"), _idx("t10k-labels-idx1-ubyte.gz")
    trows = rng.permutation(len(yt))[:test]
    return {
        "x_train": _rgb32(x[rows[:train]]),
        "y_train": y[rows[:train]].astype(np.int64),
        "x_val": _rgb32(x[rows[train:]]),
        "y_val": y[rows[train:]].astype(np.int64),
        "x_test": _rgb32(xt[trows]),
        "y_test": yt[trows].astype(np.int64),
    }


def train_network(name: str, data: dict[str, np.ndarray], epochs: int) -> tuple[Any, float]:
    """The user's side: a network trained on x_train only (the upload's own val and test
    splits never seen), with augmentation and a cosine schedule."""
    import torch

    from workers.data import Split
    from workers.networks import zoo
    from workers.train import Recipe, accuracy, fit

    torch.manual_seed(0)
    width = NETWORKS[name]["width"]
    model = zoo.resnet18(10, width) if name == "resnet18" else zoo.mobilenet_v2(10, width)
    x = data["x_train"].astype(np.float32) / 255
    t0 = time.perf_counter()
    fit(
        model,
        Split(x, data["y_train"]),
        epochs=epochs,
        recipe=Recipe(batch_size=64, lr=3e-3, augment="crop_flip"),
        stage=f"training {name}",
    )
    val = accuracy(model, Split(data["x_val"].astype(np.float32) / 255, data["y_val"]))
    print(f"{name}: trained {epochs} epochs in {time.perf_counter() - t0:.0f} s, val {val:.4f}")
    return model.eval(), val


def export(model: Any) -> bytes:
    import torch

    ep = torch.export.export(
        model, (torch.zeros(2, 3, 32, 32),), dynamic_shapes={"x": {0: torch.export.Dim("batch")}}
    )
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    return buf.getvalue()


def job_spec(name: str, trials: int, tune_s: float) -> dict[str, Any]:
    return {
        "name": f"networks-{name}",
        "dataset": "user/fashion32",
        "space": "network",
        "network": f"user/{name}",
        "profiles": [PROFILE],
        "objectives": ["accuracy", f"latency@{PROFILE}", "size"],
        "space_overrides": {
            "wbits": [8, 32],
            "codebook_bits": [0],
            "abits": [8],
            "sparsity": [0.0],
            "prune": [0.0, 0.25, 0.375, 0.5],
            "rank": [1.0, 0.5],
            "kd_alpha": [0.5, 0.9],
        },
        "budget": {"trials": trials, "tune_s": tune_s},
        "training": {
            "finetune_epochs": 2,
            "qat_epochs": 1,
            "train_subset": 4000,
            "augment": "crop_flip",
            "finetune_lr": 1e-3,
        },
        "sampler": "tpe",
        "seed": 0,
    }


def rescore(bundles: list[dict[str, Any]], test_npz: Path, out: Path) -> dict[str, Any]:
    """Every bundle's files scored (and its library timed) by a process without hwnas."""
    manifest = out.with_suffix(".manifest.json")
    manifest.write_text(
        json.dumps([{"bundle": b["bundle"], "test": str(test_npz)} for b in bundles])
    )
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "retime_bundle.py"),
            "--manifest",
            str(manifest),
            "--out",
            str(out),
            "--windows",
            "3",
        ],  # fmt: skip
        check=True,
        timeout=3600,
    )
    return dict(json.loads(out.read_text())["bundles"])


def summarize(name: str, uploaded: dict[str, Any], trials: list[dict[str, Any]],
              points: list[dict[str, Any]], scores: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    rows = []
    for p in points:
        s = scores[p["bundle"]]
        rows.append(
            {
                "model_id": p["model_id"],
                "summary": p["summary"],
                "accuracy": p["accuracy"],
                "test_accuracy": p["test_accuracy"],
                "accuracy_change": p["accuracy_change"],
                "latency_ms": p["latency_ms"],
                "latency_source": p["latency_source"],
                "speedup_vs_yours": {k: v for k, v in p["speedup_vs_dense"].items() if v},
                "size_ratio_vs_yours": p["size_ratio_vs_dense"],
                "size_bytes": p["size_bytes"],
                "acc_onnx": s["acc_onnx"],
                "acc_torchscript": s["acc_torchscript"],
                "acc_tvm": s["acc_tvm"],
                "retimed_ms": s["retimed_ms"],
            }
        )
    within = [r for r in rows if r["accuracy"] >= uploaded["accuracy"] - WITHIN]
    fastest = max(
        within, key=lambda r: max(r["speedup_vs_yours"].values(), default=0), default=None
    )
    smallest = max(within, key=lambda r: r["size_ratio_vs_yours"] or 0, default=None)
    trial_s = [t for t in (_trial_s(t) for t in trials) if t is not None]
    speed = max(fastest["speedup_vs_yours"].values(), default=0.0) if fastest else 0.0
    size = (smallest or {}).get("size_ratio_vs_yours") or 0.0
    files = ("acc_onnx", "acc_torchscript", "acc_tvm")
    files_off = max((abs(r[k] - r["test_accuracy"]) for r in rows for k in files), default=0.0)
    return {
        "name": name,
        "what": NETWORKS[name]["what"],
        "uploaded": uploaded,
        "trials": len(trials),
        "trial_s_median": median(trial_s) if trial_s else None,
        "trial_s": trial_s,
        "best_within_1pt": fastest,
        "smallest_within_1pt": smallest,
        "points": rows,
        "goals": {
            "speedup_within_1pt": {
                "goal": SPEED_GOAL,
                "got": round(speed, 3),
                "met": speed >= SPEED_GOAL,
            },
            "size_ratio_within_1pt": {
                "goal": SIZE_GOAL,
                "got": round(size, 3),
                "met": size >= SIZE_GOAL,
            },
            "trial_s_median": {
                "goal": TRIAL_GOAL_S,
                "got": round(median(trial_s), 1) if trial_s else None,
                "met": bool(trial_s) and median(trial_s) <= TRIAL_GOAL_S,
            },
            "files_within_0.002": {"got": round(files_off, 4), "met": files_off <= 0.002},
        },  # fmt: skip
        "missed": _missed(rows, trials, speed, size, trial_s),
    }


def _missed(rows: list[dict[str, Any]], trials: list[dict[str, Any]], speed: float,
            size: float, trial_s: list[float]) -> dict[str, str]:  # fmt: skip
    """By how much each missed goal was missed, and what the run itself says about why."""
    out: dict[str, str] = {}
    closest = max(rows, key=lambda r: r["accuracy"], default=None)
    if closest and (speed < SPEED_GOAL or size < SIZE_GOAL):
        fast = max(closest["speedup_vs_yours"].values(), default=0.0)
        why = (
            f"the front's most accurate point ({closest['model_id']}) is "
            f"{-closest['accuracy_change'] * 100:.1f} pts below yours "
            f"({fast:.2f}x faster, {closest['size_ratio_vs_yours']:.1f}x smaller): "
            f"{closest['summary']}"
        )
        if speed < SPEED_GOAL:
            out["speedup_within_1pt"] = f"short by {SPEED_GOAL - speed:.2f}x; {why}"
        if size < SIZE_GOAL:
            out["size_ratio_within_1pt"] = f"short by {SIZE_GOAL - size:.2f}x; {why}"
    if trial_s and median(trial_s) > TRIAL_GOAL_S:
        stages: dict[str, list[float]] = {}
        for t in trials:
            for r in (t.get("timings") or {}).get("runs") or []:
                for k, v in (r.get("timings") or {}).items():
                    stages.setdefault(k, []).append(float(v))
        parts = sorted(((median(v), k) for k, v in stages.items()), reverse=True)
        out["trial_s_median"] = (
            f"over by {median(trial_s) - TRIAL_GOAL_S:.0f} s; median seconds per stage: "
            + ", ".join(f"{k} {s:.0f}" for s, k in parts)
        )
    return out


def _trial_s(t: dict[str, Any]) -> float | None:
    """A complete trial's wall seconds in its worker, dispatch to result (every stage)."""
    if t["state"] != "complete":
        return None
    runs = (t.get("timings") or {}).get("runs") or []
    total = sum(float(v) for r in runs for v in (r.get("timings") or {}).values())
    return round(total, 1) if total else None


def plot(nets: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(nets), figsize=(6 * len(nets), 4.6), squeeze=False)
    for ax, n in zip(axes[0], nets, strict=True):
        u = n["uploaded"]
        xs = [max(p["speedup_vs_yours"].values(), default=float("nan")) for p in n["points"]]
        ys = [p["accuracy"] for p in n["points"]]
        sizes = [30 + 12 * (p["size_ratio_vs_yours"] or 1) for p in n["points"]]
        ax.scatter(xs, ys, s=sizes, c="#4c72b0", alpha=0.7, label="front points (area: x smaller)")
        ax.scatter([1.0], [u["accuracy"]], marker="*", s=220, c="#c44e52", label="your model")
        ax.axhline(u["accuracy"] - WITHIN, ls="--", c="#999", lw=1, label="1 point below yours")
        ax.axvline(SPEED_GOAL, ls=":", c="#dd8452", lw=1, label=f"{SPEED_GOAL:g}x goal")
        ax.set_xlabel(f"speedup vs your model on {PROFILE} (verified)")
        ax.set_ylabel("validation accuracy")
        ax.set_title(f"{n['name']}: median trial {n['trial_s_median'] or 0:.0f} s")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _machine() -> dict[str, Any]:
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line
                break
    except OSError:
        pass
    isa = [
        f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f" {f}" in flags
    ]
    model = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
         if ln.startswith("model name")), platform.processor()
    )  # fmt: skip
    return {"cpu": model, "isa": isa, "cores": os.cpu_count(), "python": platform.python_version()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--work", type=Path, default=ROOT / "hwnas-out" / "bench-networks")
    ap.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    ap.add_argument("--epochs", type=int, default=8, help="training epochs of your models")
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--tune-s", type=float, default=1920.0, help="each job's tuning budget")
    ap.add_argument("--tune-per-candidate-s", type=float, default=120.0)
    ap.add_argument("--deadline-s", type=float, default=3000.0, help="per job")
    ap.add_argument("--pretune-candidates", type=int, default=12)
    ap.add_argument("--pretune-s", type=float, default=900.0, help="per network")
    a = ap.parse_args()
    t0 = time.perf_counter()
    a.work.mkdir(parents=True, exist_ok=True)
    a.out.mkdir(parents=True, exist_ok=True)
    data = fashion32(8000, 2000, 2000)
    npz = io.BytesIO()
    np.savez(npz, **data)
    test_npz = a.work / "test.npz"
    np.savez(test_npz, x=data["x_test"].astype(np.float32) / 255, y=data["y_test"])
    models = {n: train_network(n, data, a.epochs) for n in a.networks}
    svc = Service(
        a.work / "service",
        {"HWNAS_TUNE_PER_CANDIDATE_S": str(a.tune_per_candidate_s), "HWNAS_VERIFY_WINDOWS": "3"},
    )
    nets = []
    try:
        r = svc.client.post("/v1/datasets", params={"name": "fashion32"}, content=npz.getvalue())
        r.raise_for_status()
        for name, (model, val) in models.items():
            r = svc.client.post("/v1/networks", params={"name": name}, content=export(model))
            r.raise_for_status()
            net = r.json()
            print(f"uploaded {name}: {len(net['groups'])} groups, sha256 {net['digest'][:12]}")
            spec = job_spec(name, a.trials, a.tune_s)
            t_tune = time.perf_counter()
            out = svc.cli(
                "tune-profile", PROFILE, "--network", f"user/{name}",
                "--overrides", json.dumps(spec["space_overrides"]),
                "--candidates", str(a.pretune_candidates), "--budget-s", str(a.pretune_s),
            )  # fmt: skip
            pretuned = json.loads(out[out.index("{") :])
            pretuned["wall_s"] = round(time.perf_counter() - t_tune, 1)
            print(f"pre-tuned {name}: {pretuned}")
            done = svc.run_job(spec, a.deadline_s)
            job_id = done["id"]
            trials = svc.client.get(f"/v1/jobs/{job_id}/trials", params={"limit": 1000}).json()[
                "data"
            ]
            points = pull(svc, job_id, a.work / f"bundles-{name}")
            scores = rescore(points, test_npz, a.work / f"rescored-{name}.json")
            first = next(t["metrics"] for t in trials if t["state"] == "complete")
            dense = [
                v["dense_ms"] for p in points for v in p["verified"].values() if v.get("dense_ms")
            ]
            uploaded = {
                "accuracy": first["parent_accuracy"],
                "test_accuracy": first["parent_test_accuracy"],
                "trained_val_accuracy": val,
                "latency_ms": {PROFILE: median(dense)} if dense else {},
                "size_bytes": first["dense_size_bytes"],
            }
            nets.append(summarize(name, uploaded, trials, points, scores) | {"pretune": pretuned})
    finally:
        svc.stop()
    result = {
        "benchmark": "networks",
        "machine": _machine(),
        "data": "Fashion-MNIST at 3x32x32: 8,000 train / 2,000 val / 2,000 test",
        "protocol": "latency: shipped TVM library, MetaSchedule-tuned, timed by the job's "
        "verification beside your model compiled and tuned the same way (1 thread, batch 1); "
        "acc_*: each file re-scored on the test split by bench/retime_bundle.py (no hwnas)",
        "wall_s": round(time.perf_counter() - t0, 1),
        "networks": nets,
    }
    (a.out / "networks.json").write_text(json.dumps(result, indent=1))
    plot(nets, a.out / "networks.png")
    for n in nets:
        print(n["name"], json.dumps(n["goals"]))
        for goal, why in n["missed"].items():
            print(f"  missed {goal}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
