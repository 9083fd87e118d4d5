"""The per-candidate pipeline a Ray worker runs: train, compress, measure, export.

``evaluate_candidate`` takes JSON-ready inputs and returns a JSON-ready result, so it runs the
same in a test, a Ray task, or any other executor. It never touches the database.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import torch

from search_spaces import Candidate
from workers.compress import write_packed
from workers.compress.pipeline import compress
from workers.data import Splits, load_splits
from workers.export import export_onnx, export_torchscript, write_card
from workers.models import count_params, example_input
from workers.parents import trained_parent
from workers.probe import ProbeOptions
from workers.probe.actor import probe_warm
from workers.train import Recipe, accuracy


@dataclass(frozen=True)
class EvalSpec:
    """What the scheduler tells a worker besides the candidate."""

    dataset: str
    profiles: list[str]
    bundle_dir: str
    cache_dir: str
    split_seed: int = 0
    user_dir: str | None = None
    threads: int = 1
    recipe: dict[str, Any] = field(default_factory=dict)
    tuning_dir: str | None = None
    probe_cache_dir: str | None = None
    tune_budget_s: float = 0.0
    check_samples: int = 256


@cache
def _splits(dataset: str, seed: int, user_dir: str | None) -> Splits:
    return load_splits(dataset, seed, Path(user_dir) if user_dir else None)


def evaluate_candidate(candidate: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """Train (or reuse) the dense parent, compress it, fine-tune with KD, measure, export.

    Returns:
        ``metrics`` (``accuracy`` on val, ``test_accuracy``, ``size_bytes``, ``latency_ms`` per
        profile, ``params``, ``parent_accuracy``), ``latency`` (full stats per profile),
        ``bundle_dir``, ``timings`` (seconds per stage) and ``parent_cache_hit``.
    """
    cand = Candidate.model_validate(candidate)
    s = EvalSpec(**spec)
    recipe = Recipe(**s.recipe)
    torch.set_num_threads(s.threads)
    timings: dict[str, float] = {}
    t = time.perf_counter()

    data = _splits(s.dataset, s.split_seed, s.user_dir)
    parent, hit = trained_parent(
        cand,
        dataset=s.dataset,
        split_seed=s.split_seed,
        recipe=recipe,
        train_data=data.train,
        cache_dir=Path(s.cache_dir),
    )
    timings["parent_s"], t = time.perf_counter() - t, time.perf_counter()

    child, info = compress(parent, data.train, recipe)
    timings["compress_s"], t = time.perf_counter() - t, time.perf_counter()

    bundle = Path(s.bundle_dir)
    bundle.mkdir(parents=True, exist_ok=True)
    size = write_packed(bundle / "weights.packed.safetensors", child)
    metrics: dict[str, Any] = {
        "accuracy": accuracy(child, data.val),
        "test_accuracy": accuracy(child, data.test),
        "parent_accuracy": accuracy(parent, data.val),
        "size_bytes": size,
        "params": count_params(child),
        "quantization": info["quantization"],
    }
    timings["evaluate_s"], t = time.perf_counter() - t, time.perf_counter()

    example = example_input(cand)
    options = ProbeOptions(
        tuning_root=Path(s.tuning_dir) if s.tuning_dir else None,
        cache_dir=Path(s.probe_cache_dir) if s.probe_cache_dir else None,
        tune_budget_s=s.tune_budget_s,
    )
    check = torch.from_numpy(data.val.x[: s.check_samples]).reshape(-1, *example.shape[1:])
    latency = {}
    for name in s.profiles:
        latency[name] = probe_warm(
            child,
            example,
            name,
            options=options,
            check_inputs=check,
            library_path=bundle / "tvm" / f"{name.replace('/', '_')}.so",
        )
    metrics["latency_ms"] = {name: st["median_ms"] for name, st in latency.items()}
    metrics["latency_partial"] = sorted(n for n, st in latency.items() if st["partial"])
    timings["probe_s"], t = time.perf_counter() - t, time.perf_counter()

    export_torchscript(child, example, bundle / "model.pt")
    export_onnx(child, example, bundle / "model.onnx")
    write_card(
        bundle / "card.json",
        {
            "candidate": cand.model_dump(mode="json"),
            "summary": cand.summary(),
            "metrics": metrics,
            "latency": latency,
            "data": {
                "dataset": s.dataset,
                **data.describe(),
                "test_indices": None if data.test.index is None else data.test.index.tolist(),
            },
            "input": {"name": "input", "shape": [None, *cand.input_shape], "dtype": "float32"},
            "files": {
                "onnx": "model.onnx",
                "torchscript": "model.pt",
                "packed_weights": "weights.packed.safetensors",
                "tvm": {name: f"tvm/{name.replace('/', '_')}.so" for name in s.profiles},
            },
            "notes": [
                "Weights are stored packed at their bit-widths (weights.packed.safetensors); "
                "model.pt and model.onnx hold the same quantized values as float32.",
                "Latency: the compressed graph compiled by TVM per profile (int8 layers as int8 x "
                "int8 -> int32 kernels with requantization, fp16 on GPUs, fp32 otherwise), "
                "MetaSchedule-tuned on CPUs; see latency.<profile>.tuning / partial.",
            ],
        },
    )
    timings["export_s"] = time.perf_counter() - t
    return {
        "metrics": metrics,
        "latency": latency,
        "bundle_dir": str(bundle),
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "parent_cache_hit": hit,
    }
