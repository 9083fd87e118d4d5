"""Compression benchmark: accuracy vs size and vs latency on Fashion-MNIST, fixed architecture.

Grid: prune {0, .25, .5, .75} x weight bits {32, 8, 4} x rank {1, 1/2, 1/4}, with and without
knowledge distillation. One dense parent is trained; each (prune, rank, kd) is shrunk and
fine-tuned once and then quantized at each bit-width (8: PTQ, 4: QAT, activations 8-bit for
both). Accuracy is on the 10k test split. Size is the packed-weights payload. Latency is the
``x86/local`` TVM probe: default (untuned) schedules on the fp32 graph of the compressed
structure, so it depends on prune and rank, not on bits; it is labelled so in the JSON.

Usage: python bench/compression.py [--quick] [--out bench/results]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

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
from workers.probe import probe  # noqa: E402
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny run to check the harness")
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--cache", default="hwnas-data/bench-parents")
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
    base_probe = probe(base, example, profile)
    baseline = {
        "accuracy": accuracy(base, test),
        "latency_ms": base_probe.median_ms,
        "latency_cv": base_probe.cv,
        "size_bytes": packed_size(base),
    }
    print(f"baseline {baseline}", flush=True)

    points, probes = [], {}
    for kd in (False, True):
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
                key = (prune, rank)
                if key not in probes:  # latency of the float graph depends on structure only
                    probes[key] = probe(fold_batchnorm(copy.deepcopy(child)), example, profile)
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
                        "latency_ms": probes[key].median_ms,
                        "latency_cv": probes[key].cv,
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
    result = {
        "dataset": "fashion_mnist",
        "profile": profile.name,
        "latency_note": "TVM default (untuned) schedules, fp32 graph of the compressed structure",
        "architecture": dense.summary(),
        "recipe": recipe.__dict__,
        "baseline": baseline,
        "points": points,
        "summary": {
            "within_1pt_best_speedup": best_speed,
            "within_1pt_best_size_ratio": best_size,
            "p2_points_3x_faster_8x_smaller_within_1pt": len(both),
        },
        "wall_s": round(time.perf_counter() - t_start, 1),
        "quick": args.quick,
    }
    name = "compression-quick" if args.quick else "compression"
    (out / f"{name}.json").write_text(json.dumps(result, indent=2))
    plot(result, out / f"{name}.png")
    print(json.dumps(result["summary"]), f"wall {result['wall_s']} s", flush=True)
    return 0


def plot(result: dict, path: Path) -> None:  # type: ignore[type-arg]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    colors = {32: "tab:blue", 8: "tab:orange", 4: "tab:red"}
    base = result["baseline"]
    for ax, key, label in (
        (axes[0], "size_bytes", "packed size (KB, log)"),
        (axes[1], "latency_ms", "latency ms (TVM untuned, fp32 graph, log)"),
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
