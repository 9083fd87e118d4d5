"""The per-candidate pipeline a Ray worker runs: train, compress, measure, export.

``evaluate_candidate`` takes JSON-ready inputs and returns a JSON-ready result, so it runs the
same in a test, a Ray task, or any other executor. It never touches the database.
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import torch

from search_spaces import Candidate
from workers.bounds import Constraint
from workers.compress import write_packed
from workers.compress.pipeline import compress
from workers.cost import compute_cost
from workers.data import Splits, load_splits
from workers.export import export_onnx, export_torchscript, write_card
from workers.models import count_params, example_input
from workers.parents import trained_parent
from workers.prefilter import prefilter
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
    constraints: list[dict[str, Any]] = field(default_factory=list)  # pre-filter these
    epochs_fraction: float = 1.0  # multi-fidelity rung: this share of every epoch count
    export: bool = True  # write TorchScript / ONNX / card (full-fidelity trials)
    num_gpus: float = 0.0  # the Ray resource request (a CUDA profile's trial holds a GPU)


class _Clock:
    """Wall and CPU seconds per stage (CPU: this process, all its threads)."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._t, self._c = time.perf_counter(), time.process_time()

    def lap(self, stage: str) -> None:
        t, c = time.perf_counter(), time.process_time()
        self.wall[f"{stage}_s"] = round(t - self._t, 3)
        self.cpu[stage] = round(c - self._c, 3)
        self._t, self._c = t, c


def _node() -> str:
    """The Ray node running this task (hostname:pid outside Ray)."""
    try:
        import ray

        if ray.is_initialized():
            return str(ray.get_runtime_context().get_node_id())
    except Exception:  # noqa: BLE001 - the node label is informational
        pass
    return f"{socket.gethostname()}:{os.getpid()}"


def _scaled(recipe: Recipe, fraction: float) -> Recipe:
    if fraction >= 1.0:
        return recipe
    return replace(
        recipe,
        epochs=max(1, math.ceil(recipe.epochs * fraction)),
        finetune_epochs=math.ceil(recipe.finetune_epochs * fraction),
        qat_epochs=math.ceil(recipe.qat_epochs * fraction),
    )


@cache
def _splits(dataset: str, seed: int, user_dir: str | None) -> Splits:
    return load_splits(dataset, seed, Path(user_dir) if user_dir else None)


def evaluate_candidate(candidate: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """Pre-filter, train (or reuse) the dense parent, compress it, fine-tune with KD, measure,
    export.

    Returns:
        ``metrics`` (``accuracy`` on val, ``test_accuracy``, ``size_bytes``, ``macs``,
        ``bitops``, ``latency_ms`` per profile, ``params``, ``parent_accuracy``), ``latency``
        (full stats per profile), ``bundle_dir``, ``timings`` (wall seconds per stage),
        ``cpu_s`` (CPU seconds per stage), ``device_s`` (probe seconds per profile),
        ``parent_cache_hit``, ``node`` and ``prefilter`` (what the pre-filter measured). When
        the pre-filter rejects the candidate, ``prefiltered`` is True and there is no training,
        no accuracy and no bundle.
    """
    cand = Candidate.model_validate(candidate)
    s = EvalSpec(**spec)
    recipe = _scaled(Recipe(**s.recipe), s.epochs_fraction)
    torch.set_num_threads(s.threads)
    clock = _Clock()
    options = ProbeOptions(
        tuning_root=Path(s.tuning_dir) if s.tuning_dir else None,
        cache_dir=Path(s.probe_cache_dir) if s.probe_cache_dir else None,
        tune_budget_s=s.tune_budget_s,
    )
    device_s: dict[str, float] = {}
    pre: dict[str, Any] | None = None
    if s.constraints:
        pre = prefilter(cand, [Constraint(**c) for c in s.constraints], s.profiles, options)
        clock.lap("prefilter")
        for name, st in pre["latency"].items():
            device_s[name] = round(st["compile_s"] + st["measure_s"], 3)
        if pre["rejected"]:
            return {
                "prefiltered": True,
                "prefilter": pre,
                "metrics": pre["metrics"],
                "latency": pre["latency"],
                "timings": clock.wall,
                "cpu_s": clock.cpu,
                "device_s": device_s,
                "node": _node(),
            }

    data = _splits(s.dataset, s.split_seed, s.user_dir)
    parent, hit = trained_parent(
        cand,
        dataset=s.dataset,
        split_seed=s.split_seed,
        recipe=recipe,
        train_data=data.train,
        cache_dir=Path(s.cache_dir),
    )
    clock.lap("parent")

    child, info = compress(parent, data.train, recipe)
    clock.lap("compress")

    bundle = Path(s.bundle_dir)
    bundle.mkdir(parents=True, exist_ok=True)
    size = write_packed(bundle / "weights.packed.safetensors", child)
    example = example_input(cand)
    metrics: dict[str, Any] = {
        "accuracy": accuracy(child, data.val),
        "test_accuracy": accuracy(child, data.test) if s.export else None,
        "parent_accuracy": accuracy(parent, data.val),
        "size_bytes": size,
        "params": count_params(child),
        "quantization": info["quantization"],
        **compute_cost(child, example),
    }
    clock.lap("evaluate")

    check = torch.from_numpy(data.val.x[: s.check_samples]).reshape(-1, *example.shape[1:])
    latency = {}
    for name in s.profiles:
        t0 = time.perf_counter()
        latency[name] = probe_warm(
            child,
            example,
            name,
            options=options,
            check_inputs=check,
            library_path=bundle / "tvm" / f"{name.replace('/', '_')}.so" if s.export else None,
        )
        device_s[name] = round(device_s.get(name, 0.0) + time.perf_counter() - t0, 3)
    metrics["latency_ms"] = {name: st["median_ms"] for name, st in latency.items()}
    metrics["latency_partial"] = sorted(n for n, st in latency.items() if st["partial"])
    clock.lap("probe")
    result = {
        "prefiltered": False,
        "prefilter": pre,
        "metrics": metrics,
        "latency": latency,
        "bundle_dir": str(bundle) if s.export else None,
        "parent_cache_hit": hit,
        "node": _node(),
        "device_s": device_s,
    }
    if s.export:
        _export(cand, child, example, bundle, s, data, metrics, latency)
        clock.lap("export")
    return {**result, "timings": clock.wall, "cpu_s": clock.cpu}


def _export(
    cand: Candidate,
    child: torch.nn.Module,
    example: torch.Tensor,
    bundle: Path,
    s: EvalSpec,
    data: Splits,
    metrics: dict[str, Any],
    latency: dict[str, Any],
) -> None:
    """The downloadable bundle: TorchScript, ONNX and the model card."""
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
