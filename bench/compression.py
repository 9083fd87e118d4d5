"""Compression benchmark: accuracy vs size and vs latency on Fashion-MNIST, fixed architecture.

Grid: prune {0, .25, .5, .75} x weight bits {32, 8, 4} x rank {1, 1/2, 1/4}, with or without
knowledge distillation (``--kd``). One dense parent is trained; each (prune, rank, kd) is shrunk and
fine-tuned once and then quantized at each bit-width (8: PTQ, 4: QAT, activations 8-bit for
both). Accuracy is on the 10k test split. Size is the packed-weights payload.

Latency is measured point by point: every distinct lowered structure (the compressed graph as
TVM compiles it, int8 layers as int8 kernels, so an 8-bit point is its own structure) is
MetaSchedule-tuned (``--tune-budget-s`` per structure, XGBoost cost model, one tuning
database for the run) and timed on ``x86/local`` with the canary interleaved; points that lower
to the same structure (KD or not, 4- or 8-bit integer weights) share that one measurement.
Each point carries its ``structure`` id and ``latency_source``; ``int8_vs_fp32`` compares the
fp32 and the int8 structure of each (prune, rank), on the machine it ran on.

The KD comparison (``--kd both``) doubles the training; the default grid fine-tunes without KD
so that tuning every structure fits the benchmark's hour on 2 cores.

Usage: python bench/compression.py [--quick] [--kd off|on|both] [--tune-budget-s S] [--out DIR]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hw_profiles import get_profile  # noqa: E402
from search_spaces import Candidate, Stage  # noqa: E402
from workers.compress import packed_size  # noqa: E402
from workers.compress.fold import fold_batchnorm  # noqa: E402
from workers.compress.pipeline import quantize_child, shrink  # noqa: E402
from workers.data import load_splits  # noqa: E402
from workers.models import assign_bits, example_input  # noqa: E402
from workers.parents import trained_parent  # noqa: E402
from workers.probe import ProbeOptions, probe  # noqa: E402
from workers.probe.cache import structure_hash, tensor_shapes  # noqa: E402
from workers.probe.lowering import deployable, to_relax  # noqa: E402
from workers.train import Recipe, accuracy  # noqa: E402

PRUNES = (0.0, 0.25, 0.5, 0.75)
BITS = (32, 8, 4)
RANKS = (1.0, 0.5, 0.25)
WIDTHS = (32, 64, 128)


def candidate(prune: float, rank: float, wbits: int) -> Candidate:
    abits = 32 if wbits == 32 else 8
    stages = tuple(
        Stage(width=w, stride=2 if i < 2 else 1, wbits=wbits, abits=abits, prune=prune, rank=rank)
        for i, w in enumerate(WIDTHS)
    )
    return Candidate(
        space="bench",
        family="cnn",
        input_shape=(1, 28, 28),
        num_classes=10,
        stages=stages,
        head_wbits=8 if wbits < 32 else 32,
        head_abits=abits,
    )


class Latencies:
    """One tuned measurement per distinct lowered structure, for the whole run."""

    def __init__(self, profile: Any, work: Path, tune_budget_s: float, check: torch.Tensor):
        self.profile = profile
        self.options = ProbeOptions(tuning_root=work / "tuning", tune_budget_s=tune_budget_s)
        self.check = check
        self.measured: dict[str, dict[str, Any]] = {}

    def of(self, model: torch.nn.Module, example: torch.Tensor) -> dict[str, Any]:
        dep, _ = deployable(model, self.profile)
        sid = structure_hash(to_relax(dep, example), tensor_shapes(dep))
        if sid not in self.measured:
            st = probe(model, example, self.profile, options=self.options, check_inputs=self.check)
            assert st.structure == sid
            self.measured[sid] = {
                "structure": sid,
                "latency_ms": st.median_ms,
                "latency_cv": st.cv,
                "latency_iqr_ms": st.iqr_ms,
                "latency_normalized": st.normalized,
                "canary_ms": st.canary_ms,
                "latency_source": "tvm-metaschedule"
                + (f", {len(st.untuned_tasks)} tasks without a record" if st.partial else ""),
                "precision": st.precision,
                "tasks": st.tasks,
                "tasks_found_tuned": st.tasks_found_tuned,
                "tune_s": st.tune_s,
                "compile_s": st.compile_s,
                "measure_s": st.measure_s,
                "argmax_agreement": st.argmax_agreement,
            }
            print(f"  structure {sid}: {json.dumps(self.measured[sid])}", flush=True)
        return self.measured[sid]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny run to check the harness")
    ap.add_argument(
        "--kd",
        choices=("off", "on", "both"),
        default="off",
        help="fine-tune with logit KD from the dense parent (both: the grid twice)",
    )
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--cache", default="hwnas-data/bench-parents")
    ap.add_argument("--work", default="hwnas-data/bench-compression")
    ap.add_argument("--tune-budget-s", type=float, default=50.0, help="tuning per structure")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("HWNAS_BENCH_THREADS", "2")))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    data = load_splits("fashion_mnist", 0)
    test = data.test
    recipe = Recipe(
        epochs=1 if args.quick else 4,
        finetune_epochs=1 if args.quick else 2,
        qat_epochs=1,
        train_subset=2000 if args.quick else 15_000,
        batch_size=128,
        lr=3e-3,
        finetune_lr=1e-3,
    )
    prunes, ranks = ((0.0, 0.5), (1.0, 0.5)) if args.quick else (PRUNES, RANKS)
    if args.quick:
        test = type(test)(test.x[:2000], test.y[:2000])
    profile = get_profile("x86/local")

    dense = candidate(0.0, 1.0, 32)
    parent, hit = trained_parent(
        dense,
        dataset="fashion_mnist",
        split_seed=0,
        recipe=recipe,
        train_data=data.train,
        cache_dir=Path(args.cache),
    )
    print(
        f"dense parent ({'cached' if hit else 'trained'}): test acc {accuracy(parent, test):.4f}",
        flush=True,
    )
    base = fold_batchnorm(copy.deepcopy(parent).eval())
    example = example_input(dense)
    work = Path(args.work)
    if work.exists():  # one run, one tuning database: nothing measured earlier is reported
        shutil.rmtree(work)
    check = torch.from_numpy(test.x[:64]).reshape(-1, *example.shape[1:])
    lat = Latencies(profile, work, args.tune_budget_s, check)
    baseline = {
        "accuracy": accuracy(base, test),
        **lat.of(base, example),
        "size_bytes": packed_size(base),
    }
    print(f"baseline {baseline}", flush=True)

    points = []
    for kd in {"off": (False,), "on": (True,), "both": (False, True)}[args.kd]:
        rec = Recipe(**{**recipe.__dict__, "kd": kd})
        for prune in prunes:
            for rank in ranks:
                t0 = time.perf_counter()
                # same architecture: the cached parent, annotated with this point's groups/ranks
                point_parent, _ = trained_parent(
                    candidate(prune, rank, 32),
                    dataset="fashion_mnist",
                    split_seed=0,
                    recipe=recipe,
                    train_data=data.train,
                    cache_dir=Path(args.cache),
                )
                child = shrink(point_parent, data.train, rec)
                for wbits in BITS:
                    q = assign_bits(copy.deepcopy(child), candidate(prune, rank, wbits))
                    q, info = quantize_child(q, data.train, rec, point_parent)
                    p = {
                        "prune": prune,
                        "rank": rank,
                        "wbits": wbits,
                        "abits": 32 if wbits == 32 else 8,
                        "kd": kd,
                        "accuracy": accuracy(q, test),
                        **lat.of(q, example),
                        "size_bytes": packed_size(q),
                        "quantization": info["quantization"] if wbits < 32 else "none",
                    }
                    points.append(p)
                    print(json.dumps(p), flush=True)
                print(f"  ({prune}, {rank}, kd={kd}) {time.perf_counter() - t0:.1f} s", flush=True)

    ok = [p for p in points if p["accuracy"] >= baseline["accuracy"] - 0.01]
    best_speed = max((baseline["latency_ms"] / p["latency_ms"] for p in ok), default=0.0)
    best_size = max((baseline["size_bytes"] / p["size_bytes"] for p in ok), default=0.0)
    both = [
        p
        for p in ok
        if baseline["latency_ms"] / p["latency_ms"] >= 3
        and baseline["size_bytes"] / p["size_bytes"] >= 8
    ]
    pairs = int8_vs_fp32(points)
    result = {
        "dataset": "fashion_mnist",
        "profile": profile.name,
        "machine": machine(),
        "latency_note": "each distinct lowered structure MetaSchedule-tuned and timed once "
        f"(<= {args.tune_budget_s:.0f} s tuning each, 1 thread, canary interleaved); points of "
        "one structure share its measurement",
        "structures": len(lat.measured),
        "tuning_s": round(sum(m["tune_s"] for m in lat.measured.values()), 1),
        "partial_structures": sum(
            "without a record" in m["latency_source"] for m in lat.measured.values()
        ),
        "int8_vs_fp32": pairs,
        "architecture": dense.summary(),
        "recipe": recipe.__dict__,
        "baseline": baseline,
        "points": points,
        "summary": {
            "within_1pt_best_speedup": best_speed,
            "within_1pt_best_size_ratio": best_size,
            "p2_points_3x_faster_8x_smaller_within_1pt": len(both),
            "best_within_1pt": best_point(ok, baseline),
            "int8_speedup_over_fp32_median": median([q["fp32_over_int8"] for q in pairs]),
        },
        "wall_s": round(time.perf_counter() - t_start, 1),
        "quick": args.quick,
    }
    name = "compression-quick" if args.quick else "compression"
    (out / f"{name}.json").write_text(json.dumps(result, indent=2))
    plot(result, out / f"{name}.png")
    print(json.dumps(result["summary"]), f"wall {result['wall_s']} s", flush=True)
    return 0


def int8_vs_fp32(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (prune, rank): the fp32 structure's latency over the 8-bit one's (same shapes)."""
    out = []
    for prune in sorted({p["prune"] for p in points}):
        for rank in sorted({p["rank"] for p in points}):
            sel = {p["wbits"]: p for p in points if (p["prune"], p["rank"]) == (prune, rank)}
            if 32 in sel and 8 in sel:
                f, i = sel[32], sel[8]
                out.append(
                    {
                        "prune": prune,
                        "rank": rank,
                        "fp32_structure": f["structure"],
                        "int8_structure": i["structure"],
                        "fp32_ms": f["latency_ms"],
                        "int8_ms": i["latency_ms"],
                        "fp32_over_int8": f["latency_ms"] / i["latency_ms"],
                        "int8_precision": i["precision"],
                    }
                )
    return out


def best_point(ok: list[dict[str, Any]], base: dict[str, Any]) -> dict[str, Any] | None:
    """The point within 1 point of dense that is best at both goals at once (the smaller of
    speedup / 3 and size ratio / 8), with its ratios: the honest headline."""
    if not ok:
        return None
    p = max(
        ok,
        key=lambda p: min(
            base["latency_ms"] / p["latency_ms"] / 3, base["size_bytes"] / p["size_bytes"] / 8
        ),
    )
    keys = ("prune", "rank", "wbits", "abits", "kd", "accuracy", "structure", "latency_ms")
    return {
        **{k: p[k] for k in keys},
        "speedup": base["latency_ms"] / p["latency_ms"],
        "size_ratio": base["size_bytes"] / p["size_bytes"],
        "accuracy_loss": base["accuracy"] - p["accuracy"],
    }


def median(xs: list[float]) -> float | None:
    return float(statistics.median(xs)) if xs else None


def machine() -> dict[str, Any]:
    import platform

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "amx_int8") if f" {f}" in flags]
    return {"cpus": os.cpu_count(), "machine": platform.machine(), "isa": isa}


def plot(result: dict, path: Path) -> None:  # type: ignore[type-arg]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    colors = {32: "tab:blue", 8: "tab:orange", 4: "tab:red"}
    base = result["baseline"]
    for ax, key, label in (
        (axes[0], "size_bytes", "packed size (KB, log)"),
        (axes[1], "latency_ms", "latency ms (TVM, MetaSchedule-tuned per structure, log)"),
    ):
        for p in result["points"]:
            x = p[key] / 1024 if key == "size_bytes" else p[key]
            ax.scatter(
                x,
                p["accuracy"],
                c=colors[p["wbits"]],
                marker="o" if p["kd"] else "x",
                alpha=0.75,
                s=28,
            )
        bx = base[key] / 1024 if key == "size_bytes" else base[key]
        ax.scatter(bx, base["accuracy"], c="black", marker="*", s=160, label="dense fp32")
        ax.axhline(base["accuracy"] - 0.01, color="gray", ls="--", lw=0.8, label="-1 pt")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (Fashion-MNIST)")
    handles = [
        plt.Line2D([], [], color=c, marker="o", ls="", label=f"{b}-bit weights")
        for b, c in colors.items()
    ]
    handles += [
        plt.Line2D([], [], color="gray", marker="o", ls="", label="with KD"),
        plt.Line2D([], [], color="gray", marker="x", ls="", label="without KD"),
    ]
    axes[1].legend(handles=handles + axes[1].get_legend_handles_labels()[0], loc="lower right")
    fig.suptitle(f"hwnas compression on Fashion-MNIST: {result['architecture']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
