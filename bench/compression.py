"""Compression benchmark: every technique alone and combined on Fashion-MNIST, fixed architecture.

One dense parent (CNN 32-64-128) is trained. Each *shrink* (structured prune ratio, low-rank
fraction, unstructured sparsity, distillation mode) is fine-tuned once, then coded in several
weight formats: float32, int8 (PTQ), int4 / int2 / ternary / binary (QAT, straight-through),
k-means codebooks of 2 / 4 / 6 bits (centroids fine-tuned). Integer-coded formats run with 8-bit
activations (int8 kernels); float and codebook formats with float activations. Stem and head
stay at 8 bits (integer formats) or float32. Unstructured sparsity is gradual (3 rounds, cubic
schedule) with one global magnitude threshold over the stage layers. Accuracy is on the 10k
test split; size is the packed-weights file (:mod:`workers.compress.pack`: levels, codebooks,
bitmasks, scales).

Latency is measured point by point: every distinct lowered structure (the compressed graph as
TVM compiles it, int8 layers as int8 kernels) is MetaSchedule-tuned (``--tune-budget-s`` per
structure, XGBoost cost model, one tuning database for the run) and timed on ``x86/local``
with the canary interleaved. Points that lower to the same structure share that measurement:
sparse and codebook layers compute as dense float (these targets have no sparse or
lookup-table kernels), and int8 / int4 / int2 / ternary / binary weights all run as int8
kernels, so their latency is that of their dense structure, and ``latency_note`` says so.
Each point carries ``technique`` (what it applies, e.g. ``prune+rank+int8``), ``structure``,
``latency_source``, ``sparsity`` and ``codebook_bits``; ``kd_effect`` compares no KD, logit KD
and logit + relation KD on the same low-bit points; ``int8_vs_fp32`` the fp32 and the int8
structure of each (prune, rank).

Usage: python bench/compression.py [--quick] [--tune-budget-s S] [--out DIR]
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

from _int8 import resnet18_pair  # noqa: E402

from hw_profiles import get_profile  # noqa: E402
from hw_profiles.isa import host_isa, resolve_int8_dot  # noqa: E402
from search_spaces import INT_CODED, Candidate, Stage  # noqa: E402
from workers.compress import packed_size  # noqa: E402
from workers.compress.fold import fold_batchnorm  # noqa: E402
from workers.compress.pipeline import quantize_child, shrink  # noqa: E402
from workers.data import load_splits  # noqa: E402
from workers.models import (  # noqa: E402
    assign_bits,
    example_input,
    weight_layers,  # noqa: E402
)
from workers.parents import trained_parent  # noqa: E402
from workers.probe import ProbeOptions, probe  # noqa: E402
from workers.probe.cache import structure_hash, tensor_shapes  # noqa: E402
from workers.probe.lowering import deployable, to_relax  # noqa: E402
from workers.train import Recipe, accuracy, predict  # noqa: E402

WIDTHS = (32, 64, 128)
RELATION = 1000.0  # similarity-preserving KD weight (Tung & Mori's order of magnitude)
KD_MODES: dict[str, dict[str, Any]] = {
    "off": {"kd": False},
    "logit": {"kd": True, "kd_alpha": 0.9, "kd_temperature": 4.0},
    "relation": {"kd": True, "kd_alpha": 0.9, "kd_temperature": 4.0, "kd_relation": RELATION},
}
# weight formats: name -> (wformat, wbits)
FORMATS: dict[str, tuple[str, int]] = {
    "fp32": ("float", 32),
    "int8": ("int", 8),
    "int4": ("int", 4),
    "int2": ("int", 2),
    "ternary": ("ternary", 2),
    "binary": ("binary", 1),
    "km2": ("kmeans", 2),
    "km4": ("kmeans", 4),
    "km6": ("kmeans", 6),
}
LOW_BITS = ("int4", "ternary", "binary")
# (prune, rank, sparsity, kd mode) -> formats; 47 points, 12 distinct structures
GRID: dict[tuple[float, float, float, str], tuple[str, ...]] = {
    (0.0, 1.0, 0.0, "off"): tuple(FORMATS),
    (0.5, 1.0, 0.0, "off"): ("fp32", "int8", "int4", "ternary"),
    (0.75, 1.0, 0.0, "off"): ("fp32", "int8", "int4", "ternary"),
    (0.0, 0.5, 0.0, "off"): ("fp32", "int8", "int4", "ternary"),
    (0.5, 0.5, 0.0, "off"): ("fp32", "int8", "int4", "ternary"),
    (0.75, 0.5, 0.0, "off"): ("fp32", "int8", "int4", "ternary"),
    (0.0, 1.0, 0.5, "off"): ("fp32", "int8", "km4"),
    (0.0, 1.0, 0.75, "off"): ("fp32", "int8", "km4"),
    (0.0, 1.0, 0.9, "off"): ("fp32", "int8", "km4"),
    (0.5, 0.5, 0.75, "off"): ("int8", "km4", "ternary"),
    (0.0, 1.0, 0.0, "logit"): LOW_BITS,
    (0.0, 1.0, 0.0, "relation"): LOW_BITS,
}
QUICK_GRID: dict[tuple[float, float, float, str], tuple[str, ...]] = {
    (0.0, 1.0, 0.0, "off"): ("fp32", "int8", "ternary", "binary", "km4"),
    (0.5, 0.5, 0.5, "off"): ("int8", "km4"),
    (0.0, 1.0, 0.0, "relation"): ("ternary",),
}


def candidate(prune: float, rank: float, fmt: str = "fp32", sparsity: float = 0.0) -> Candidate:
    wformat, wbits = FORMATS[fmt]
    integer = wformat in INT_CODED
    abits = 8 if integer else 32
    stages = tuple(
        Stage(
            width=w,
            stride=2 if i < 2 else 1,
            wbits=wbits,
            wformat=wformat,  # type: ignore[arg-type]
            abits=abits,
            prune=prune,
            rank=rank,
            sparsity=sparsity,
        )
        for i, w in enumerate(WIDTHS)
    )
    return Candidate(
        space="bench",
        family="cnn",
        input_shape=(1, 28, 28),
        num_classes=10,
        stages=stages,
        head_wbits=8 if integer else 32,
        head_abits=abits,
    )


def technique(prune: float, rank: float, sparsity: float, fmt: str, kd: str) -> str:
    """What a point applies, ``+``-joined (``none``: the fine-tuned dense model)."""
    parts = []
    if prune:
        parts.append("prune")
    if rank < 1:
        parts.append("rank")
    if sparsity:
        parts.append("unstructured")
    if fmt.startswith("km"):
        parts.append("clustering")
    elif fmt != "fp32":
        parts.append(fmt)
    if kd != "off":
        parts.append("kd" if kd == "logit" else "relation-kd")
    return "+".join(parts) or "none"


class Latencies:
    """One tuned measurement per distinct lowered structure, for the whole run."""

    def __init__(self, profile: Any, work: Path, tune_budget_s: float, check: torch.Tensor):
        self.profile = profile
        self.options = ProbeOptions(tuning_root=work / "tuning", tune_budget_s=tune_budget_s)
        self.check = check
        self.measured: dict[str, dict[str, Any]] = {}

    def of(self, model: torch.nn.Module, example: torch.Tensor) -> dict[str, Any]:
        dep, _ = deployable(model, self.profile)
        sid = structure_hash(to_relax(dep, example, self.profile), tensor_shapes(dep))
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
        kd=False,
        sparsity_scope="global",  # one magnitude threshold over the sparse layers
        sparsity_steps=1 if args.quick else 3,  # gradual (cubic schedule), one epoch between
    )
    grid = QUICK_GRID if args.quick else GRID
    if args.quick:
        test = type(test)(test.x[:2000], test.y[:2000])
    profile = get_profile("x86/local")

    dense = candidate(0.0, 1.0)
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
    teacher_pred = predict(base, test)
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
    for (prune, rank, sparsity, kd), formats in grid.items():
        t0 = time.perf_counter()
        rec = Recipe(**{**recipe.__dict__, **KD_MODES[kd]})
        # same architecture: the cached parent, annotated with this shrink's groups/ranks/zeros
        point_parent, _ = trained_parent(
            candidate(prune, rank, "fp32", sparsity),
            dataset="fashion_mnist",
            split_seed=0,
            recipe=recipe,
            train_data=data.train,
            cache_dir=Path(args.cache),
        )
        child = shrink(point_parent, data.train, rec)
        for fmt in formats:
            cand = candidate(prune, rank, fmt, sparsity)
            q = assign_bits(copy.deepcopy(child), cand)
            q, info = quantize_child(q, data.train, rec, point_parent)
            pred = predict(q, test)
            wformat, wbits = FORMATS[fmt]
            p = {
                "technique": technique(prune, rank, sparsity, fmt, kd),
                "prune": prune,
                "rank": rank,
                "sparsity": sparsity,
                "wformat": wformat,
                "wbits": wbits,
                "codebook_bits": wbits if wformat == "kmeans" else None,
                "abits": cand.stages[0].abits,
                "kd": kd != "off",
                "kd_mode": kd,
                "accuracy": float((pred == test.y).mean()),
                "teacher_agreement": float((pred == teacher_pred).mean()),
                **lat.of(q, example),
                "size_bytes": packed_size(q),
                "measured_sparsity": measured_sparsity(q),
                "quantization": info["quantization"] if fmt != "fp32" else "none",
            }
            p["speedup"] = baseline["latency_ms"] / p["latency_ms"]
            p["size_ratio"] = baseline["size_bytes"] / p["size_bytes"]
            p["accuracy_loss"] = baseline["accuracy"] - p["accuracy"]
            points.append(p)
            print(json.dumps(p), flush=True)
        print(
            f"  ({prune}, {rank}, s{sparsity}, kd={kd}) {time.perf_counter() - t0:.1f} s",
            flush=True,
        )

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
    print("ResNet-18-style net at 3x32x32: TVM fp32 vs int8, ORT fp32 vs int8 ...", flush=True)
    resnet = resnet18_pair(profile, work, 0.0 if args.quick else args.tune_budget_s * 6)
    print(json.dumps(resnet), flush=True)
    large = [q["fp32_over_int8"] for q in pairs if q["fp32_ms"] >= LARGE_MS]
    result = {
        "dataset": "fashion_mnist",
        "profile": profile.name,
        "machine": machine(),
        "latency_note": "each distinct lowered structure MetaSchedule-tuned and timed once "
        f"(<= {args.tune_budget_s:.0f} s tuning each, 1 thread, canary interleaved); points of "
        "one structure share its measurement. Sparse and k-means layers compute as dense float "
        "weights and every integer code (int8/4/2, ternary, binary) as int8 kernels on this "
        "target: their latency is measured on that dense structure, and their gain is size",
        "structures": len(lat.measured),
        "tuning_s": round(sum(m["tune_s"] for m in lat.measured.values()), 1),
        "partial_structures": sum(
            "without a record" in m["latency_source"] for m in lat.measured.values()
        ),
        "int8_vs_fp32": pairs,
        "kd_effect": kd_effect(points),
        "architecture": dense.summary(),
        "recipe": recipe.__dict__,
        "kd_modes": KD_MODES,
        "baseline": baseline,
        "points": points,
        "by_technique": by_technique(points),
        "summary": {
            "within_1pt_best_speedup": best_speed,
            "within_1pt_best_size_ratio": best_size,
            "p2_points_3x_faster_8x_smaller_within_1pt": len(both),
            "best_within_1pt": best_point(ok, baseline),
            "int8_speedup_over_fp32_median": median([q["fp32_over_int8"] for q in pairs]),
            "int8_speedup_over_fp32_median_large": median(large),
            "int8_speedup_over_fp32_large_pairs": len(large),
            "int8_speedup_over_fp32_resnet18": resnet["int8_speedup_over_fp32"],
            "ort_int8_speedup_over_fp32_resnet18": resnet["ort_int8_speedup_over_fp32"],
            "int8_dot": resnet["int8_dot"],
        },
        "int8_goals": int8_goals(resnet, median(large)),
        "resnet18_int8": resnet,
        "wall_s": round(time.perf_counter() - t_start, 1),
        "quick": args.quick,
    }
    name = "compression-quick" if args.quick else "compression"
    (out / f"{name}.json").write_text(json.dumps(result, indent=2))
    plot(result, out / f"{name}.png")
    print(json.dumps(result["summary"]), f"wall {result['wall_s']} s", flush=True)
    return 0


def measured_sparsity(net: torch.nn.Module) -> float:
    """Fraction of zero weights over the stage layers (what the bitmask stores)."""
    layers = [m for n, m in weight_layers(net) if n.startswith("stages.")]
    zeros = sum(int((m.weight == 0).sum()) for m in layers)
    return zeros / max(1, sum(m.weight.numel() for m in layers))


def kd_effect(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per format at (prune 0, rank 1, sparsity 0): accuracy and teacher agreement without KD,
    with logit KD and with logit + relation KD (same seed, same shrink budget)."""
    out = []
    plain = [p for p in points if (p["prune"], p["rank"], p["sparsity"]) == (0.0, 1.0, 0.0)]
    for fmt in sorted({(p["wformat"], p["wbits"]) for p in plain}):
        row: dict[str, Any] = {"wformat": fmt[0], "wbits": fmt[1]}
        for p in plain:
            if (p["wformat"], p["wbits"]) == fmt:
                row[p["kd_mode"]] = {
                    "accuracy": p["accuracy"],
                    "teacher_agreement": p["teacher_agreement"],
                }
        if len(row) > 3:
            out.append(row)
    return out


def by_technique(points: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The best point of each technique by accuracy, with its ratios."""
    out: dict[str, dict[str, Any]] = {}
    for p in points:
        cur = out.get(p["technique"])
        if cur is None or p["accuracy"] > cur["accuracy"]:
            out[p["technique"]] = {
                k: p[k] for k in ("accuracy", "accuracy_loss", "speedup", "size_ratio", "structure")
            }
    return dict(sorted(out.items()))


def int8_vs_fp32(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (prune, rank): the fp32 structure's latency over the 8-bit one's (same shapes)."""
    out = []
    for prune in sorted({p["prune"] for p in points}):
        for rank in sorted({p["rank"] for p in points}):
            sel = {
                p["wbits"]: p
                for p in points
                if (p["prune"], p["rank"], p["sparsity"], p["kd_mode"]) == (prune, rank, 0.0, "off")
                and p["wformat"] in ("int", "float")
            }
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
    keys = (
        "technique",
        "prune",
        "rank",
        "sparsity",
        "wformat",
        "wbits",
        "abits",
        "kd",
        "accuracy",
        "structure",
        "latency_ms",
    )
    return {
        **{k: p[k] for k in keys},
        "speedup": base["latency_ms"] / p["latency_ms"],
        "size_ratio": base["size_bytes"] / p["size_bytes"],
        "accuracy_loss": base["accuracy"] - p["accuracy"],
    }


LARGE_MS = 0.1  # pairs whose fp32 latency is at least this: call overhead does not dominate


def int8_goals(resnet: dict[str, Any], large: float | None) -> dict[str, Any]:
    """The issue's int8 goals (set for hosts with VNNI or AMX), met or missed, and by how much;
    on a host without a dot-product instruction they are measured and labelled."""
    dot = resnet["int8_dot"]
    label = (
        "goal applies: this CPU has an int8 dot-product instruction"
        if dot != "none"
        else "no int8 dot-product instruction on this CPU (no VNNI / AMX): the goals are for "
        "hosts with one; measured and labelled"
    )
    out: dict[str, Any] = {"int8_dot": dot, "label": label}
    for key, value, bound in (
        ("int8_speedup_over_fp32_median_large", large, 1.5),
        ("int8_speedup_over_fp32_resnet18", resnet["int8_speedup_over_fp32"], 3.0),
    ):
        met = value is not None and value >= bound
        out[key] = {
            "value": value,
            "goal": f">= {bound:g}",
            "met": met,
            "missed_by": None if met or value is None else (bound - value) / bound,
        }
    return out


def median(xs: list[float]) -> float | None:
    return float(statistics.median(xs)) if xs else None


def machine() -> dict[str, Any]:
    import platform

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "amx_int8") if f" {f}" in flags]
    return {
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "isa": isa,
        "flags": host_isa(),
        "int8_dot": resolve_int8_dot(get_profile("x86/local")),
    }


def plot(result: dict, path: Path) -> None:  # type: ignore[type-arg]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    colors = {
        "fp32": "tab:blue",
        "int8": "tab:orange",
        "int4": "tab:red",
        "int2": "tab:brown",
        "ternary": "tab:purple",
        "binary": "tab:pink",
        "k-means": "tab:green",
    }

    def family(p: dict[str, Any]) -> str:
        if p["wformat"] == "kmeans":
            return "k-means"
        if p["wformat"] in ("ternary", "binary"):
            return str(p["wformat"])
        return f"{'fp' if p['wformat'] == 'float' else 'int'}{p['wbits']}"

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
                c=colors[family(p)],
                marker="s" if p["kd"] else ("^" if p["sparsity"] else "o"),
                alpha=0.75,
                s=28,
            )
        bx = base[key] / 1024 if key == "size_bytes" else base[key]
        ax.scatter(bx, base["accuracy"], c="black", marker="*", s=160, label="dense fp32")
        ax.axhline(base["accuracy"] - 0.01, color="gray", ls="--", lw=0.8, label="-1 pt")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_ylim(max(0.0, base["accuracy"] - 0.25), base["accuracy"] + 0.02)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (Fashion-MNIST)")
    handles = [
        plt.Line2D([], [], color=c, marker="o", ls="", label=f"{b} weights")
        for b, c in colors.items()
    ]
    handles += [
        plt.Line2D([], [], color="gray", marker="s", ls="", label="with KD (logit / relation)"),
        plt.Line2D([], [], color="gray", marker="^", ls="", label="unstructured sparse"),
    ]
    axes[1].legend(handles=handles + axes[1].get_legend_handles_labels()[0], loc="lower right")
    fig.suptitle(f"hwnas compression on Fashion-MNIST: {result['architecture']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
