"""The per-candidate pipeline a Ray worker runs: pre-filter, train, compress, measure, export.

:func:`evaluate` works on typed records (:class:`~workers.records.EvalRequest` in,
:class:`~workers.records.EvalResult` out); :func:`evaluate_json` is the Ray edge, the one place
they are serialized. Nothing here touches the database.
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import torch

from search_spaces import Candidate
from workers import faults, progress
from workers.bundle_check import accuracy_ci95, score_files
from workers.compress import write_packed
from workers.compress.pack import packed_size
from workers.compress.pipeline import compress
from workers.compress.rounding import CHANNEL_MULTIPLE
from workers.compress.sparse import sparsity_of
from workers.cost import compute_cost
from workers.data import Split, Splits, dataset_identity, load_splits
from workers.dense import dense_candidate
from workers.export import export_onnx, export_torchscript, write_card
from workers.models import (
    LayerSpec,
    count_params,
    example_input,
    spec_of,
    weight_layers,
)
from workers.networks.models import model_of
from workers.networks.scores import normalized, uploaded_scores
from workers.parents import trained_parent
from workers.prefilter import prefilter
from workers.probe import ProbeOptions
from workers.probe.actor import probe_warm
from workers.probe.canary import CANARY_SHAPE
from workers.records import EvalRequest, EvalResult, FileScore, Metrics, ProbeStats
from workers.train import Recipe, predict


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


def tvm_file(profile: str) -> str:
    """Where a profile's library lies in a bundle."""
    return f"tvm/{profile.replace('/', '_')}.so"


def evaluate_json(payload: dict[str, Any]) -> dict[str, Any]:
    """The Ray task: JSON in (an :class:`EvalRequest`), JSON out (an :class:`EvalResult`)."""
    return evaluate(EvalRequest.model_validate(payload)).model_dump(mode="json")


def evaluate(req: EvalRequest) -> EvalResult:
    """Pre-filter, train (or reuse) the dense parent, compress it, fine-tune with KD, measure,
    export. When the pre-filter rejects the candidate, ``prefiltered`` is True and there is no
    training, no accuracy and no bundle. Each stage is reported to ``req.progress_path``."""
    with progress.reporting(req.progress_path):
        return _evaluate(req)


def _evaluate(req: EvalRequest) -> EvalResult:
    cand = req.candidate
    recipe = _scaled(Recipe(**req.recipe), req.epochs_fraction).with_distill(cand.distill)
    torch.set_num_threads(req.threads)
    clock = _Clock()
    options = ProbeOptions(
        tuning_root=Path(req.tuning_dir) if req.tuning_dir else None,
        cache_dir=Path(req.probe_cache_dir) if req.probe_cache_dir else None,
        tune_budget_s=req.tune_budget_s,
        progress_path=req.progress_path,
    )
    device_s: dict[str, float] = {}
    pre = None
    if req.constraints:
        progress.report("pre-filter: probing the untrained structure")
        t0 = time.perf_counter()
        pre = prefilter(
            cand,
            req.constraints,
            req.profiles,
            options,
            conv_method=recipe.conv_decomposition,
            network=req.network,
        )
        clock.lap("prefilter")
        for name in req.profiles:  # the probes' own wall time, cache hits included
            device_s[name] = round((time.perf_counter() - t0) / max(1, len(req.profiles)), 3)
        if pre.rejected:
            return EvalResult(
                prefiltered=True,
                prefilter=pre,
                metrics=pre.metrics,
                latency=pre.latency,
                timings=clock.wall,
                cpu_s=clock.cpu,
                device_s=device_s,
                node=_node(),
            )

    progress.report("loading data")
    data = _splits(req.dataset, req.split_seed, req.user_dir)
    identity = dataset_identity(req.dataset, Path(req.user_dir) if req.user_dir else None)
    progress.report("dense parent")
    hit: bool | None
    if req.network is not None:  # the upload is the parent: nothing to train
        data = normalized(data, req.network.description.normalization)
        parent, hit = model_of(cand, req.network), None
        parent_scores = uploaded_scores(parent, req, data, identity)
    else:
        parent, hit = trained_parent(
            cand,
            dataset=identity,
            split_seed=req.split_seed,
            recipe=recipe,
            train_data=data.train,
            cache_dir=Path(req.cache_dir),
        )
        parent_scores = (float((predict(parent, data.val) == data.val.y).mean()), None)
    clock.lap("parent")

    progress.report("compressing")
    faults.point("mid_train")
    child, info = compress(parent, data.train, recipe)
    clock.lap("compress")
    progress.report("evaluating")

    bundle = Path(req.bundle_dir)
    bundle.mkdir(parents=True, exist_ok=True)
    size = write_packed(bundle / "weights.packed.safetensors", child)
    example = example_input(cand)
    val_pred = predict(child, data.val)
    test_acc, test_ci = None, None
    if req.export:
        correct = int((predict(child, data.test) == data.test.y).sum())
        test_acc, test_ci = correct / len(data.test.y), accuracy_ci95(correct, len(data.test.y))
    cost = compute_cost(child, example)
    metrics = Metrics(
        accuracy=float((val_pred == data.val.y).mean()),
        test_accuracy=test_acc,
        test_accuracy_ci95=test_ci,
        test_n=len(data.test.y) if req.export else None,
        parent_accuracy=parent_scores[0],
        parent_test_accuracy=parent_scores[1],
        size_bytes=size,
        dense_size_bytes=packed_size(model_of(dense_candidate(cand), req.network)),
        params=count_params(child),
        macs=cost["macs"],
        bitops=cost["bitops"],
        quantization=info["quantization"],
    )
    clock.lap("evaluate")

    check = torch.from_numpy(data.val.x[: req.check_samples]).reshape(-1, *example.shape[1:])
    latency: dict[str, ProbeStats] = {}
    for i, name in enumerate(req.profiles):
        progress.report("measuring latency", i + 1, len(req.profiles), detail=name)
        t0 = time.perf_counter()
        latency[name] = probe_warm(
            child,
            example,
            name,
            options=options,
            check_inputs=check,
            library_path=bundle / tvm_file(name) if req.export else None,
        )
        device_s[name] = round(device_s.get(name, 0.0) + time.perf_counter() - t0, 3)
    metrics.latency_ms = {name: st.median_ms for name, st in latency.items()}
    metrics.latency_partial = sorted(n for n, st in latency.items() if st.partial)
    clock.lap("probe")
    files: dict[str, FileScore] = {}
    if req.export:
        progress.report("exporting and scoring the bundle")
        files = _export(cand, child, example, bundle, req, data, metrics, latency)
        clock.lap("export")
    return EvalResult(
        prefiltered=False,
        prefilter=pre,
        metrics=metrics,
        latency=latency,
        bundle_dir=str(bundle) if req.export else None,
        files=files,
        parent_cache_hit=hit,
        node=_node(),
        timings=clock.wall,
        cpu_s=clock.cpu,
        device_s=device_s,
    )


def _export(
    cand: Candidate,
    child: torch.nn.Module,
    example: torch.Tensor,
    bundle: Path,
    req: EvalRequest,
    data: Splits,
    metrics: Metrics,
    latency: dict[str, ProbeStats],
) -> dict[str, FileScore]:
    """The downloadable bundle: TorchScript, ONNX, the card; each file scored on test."""
    export_torchscript(child, example, bundle / "model.pt")
    faults.point("mid_export")
    export_onnx(child, example, bundle / "model.onnx")
    tvm_files = {name: tvm_file(name) for name in req.profiles}
    assert metrics.test_accuracy is not None
    files = score_files(bundle, data.test, cand.input_shape, tvm_files, metrics.test_accuracy)
    body = card(cand, req, data.test, data, metrics, latency, files)
    body["structure"] = structure_of(child)
    write_card(bundle / "card.json", body)
    return files


def structure_of(net: torch.nn.Module) -> dict[str, Any]:
    """The compressed layers as shipped: kind, channels (pruned / factorized widths, rounded to
    multiples of the channel multiple) and bits, so a reader sees what the passes made."""
    layers = []
    for name, m in weight_layers(net):
        spec = spec_of(m)
        row: dict[str, Any] = {
            "name": name,
            "wbits": spec.wbits,
            "wformat": spec.wformat,
            "abits": spec.abits,
            "sparsity": round(sparsity_of(m.weight.detach()), 4),
            "computes_as": _computes_as(spec),
        }
        if spec.wformat == "kmeans":
            row["codebook_bits"] = spec.wbits
        if isinstance(m, torch.nn.Conv2d):
            row |= {"kind": "conv", "in": m.in_channels, "out": m.out_channels}
            row |= {"kernel": list(m.kernel_size), "groups": m.groups}
        else:
            row |= {"kind": "linear", "in": m.in_features, "out": m.out_features}
        layers.append(row)
    return {
        "channel_multiple": CHANNEL_MULTIPLE,
        "rounding": "pruned widths and factorization ranks rounded to the nearest multiple "
        "(ties down, energy ranks up), never above the layer's width; layers no wider than "
        "the multiple are not rounded",
        "layers": layers,
    }


def _computes_as(spec: LayerSpec) -> str:
    """How a layer's weights compute on the targets (the probe lowers the same)."""
    if spec.int_coded and spec.abits <= 8:
        how = "int8 kernel (integer levels x per-channel scale)"
    elif spec.wformat == "kmeans":
        how = "dense float32 weights (codebook values)"
    else:
        how = "dense float weights"
    if spec.sparsity > 0:
        how += "; sparse weights run dense (no sparse kernels on these targets)"
    return how


def _network_card(req: EvalRequest, metrics: Metrics) -> dict[str, Any] | None:
    """For a candidate of an uploaded network: which upload, and how this model compares."""
    if req.network is None:
        return None
    desc = req.network.description
    change = (
        None
        if metrics.test_accuracy is None or metrics.parent_test_accuracy is None
        else round(metrics.test_accuracy - metrics.parent_test_accuracy, 6)
    )
    return {
        "name": desc.name,
        "sha256": desc.digest,
        "normalization": desc.normalization.model_dump(mode="json"),
        "uploaded_accuracy": metrics.parent_accuracy,
        "uploaded_test_accuracy": metrics.parent_test_accuracy,
        "test_accuracy_change": change,
        "size_ratio_vs_yours": (
            metrics.dense_size_bytes / metrics.size_bytes if metrics.dense_size_bytes else None
        ),
        "compared_with": "the uploaded model itself (its own weights, fp32): 'dense' in this "
        "card and in verified.latency means yours",
    }


def card(
    cand: Candidate,
    req: EvalRequest,
    test: Split,
    data: Splits,
    metrics: Metrics,
    latency: dict[str, ProbeStats],
    files: dict[str, FileScore],
) -> dict[str, Any]:
    """The model card: what the model is, what it scores (per file) and how fast it ran."""
    tvm_files = {name: tvm_file(name) for name in req.profiles}
    off = [k for k, f in files.items() if f.agrees_with_card is False]
    return {
        "candidate": cand.model_dump(mode="json"),
        "summary": cand.summary(),
        "metrics": metrics.model_dump(mode="json"),
        "accuracy": {
            "split": "test",
            "n": len(test.y),
            "test_accuracy": metrics.test_accuracy,
            "ci95": metrics.test_accuracy_ci95,
            "model": "the compressed model in PyTorch (fake-quant), = model.pt",
        },
        "file_scores": {k: f.model_dump(mode="json") for k, f in files.items()},
        "file_scores_note": (
            "every file scores the card's accuracy (within 0.002)"
            if not off
            else f"{', '.join(off)} score differently from the card: see each entry"
        ),
        "latency": {p: st.model_dump(mode="json") for p, st in latency.items()},
        "int8_path": {p: st.int8_note() for p, st in latency.items()},
        "verified": None,
        "data": {
            "dataset": req.dataset,
            **data.describe(),
            "test_indices": None if test.index is None else test.index.tolist(),
        },
        "input": {
            "name": "input",
            "shape": [None, *cand.input_shape],
            "dtype": "float32",
            "preprocessing": data.preprocessing,
        },
        "network": _network_card(req, metrics),
        "files": {
            "onnx": "model.onnx",
            "torchscript": "model.pt",
            "packed_weights": "weights.packed.safetensors",
            "tvm": tvm_files,
            "canary": {p: rel.replace(".so", ".canary.so") for p, rel in tvm_files.items()},
        },
        "retime": {
            "how": "load tvm/<profile>.so and tvm/<profile>.canary.so with "
            "tvm.runtime.load_module + relax.VirtualMachine; time 'main' with time_evaluator in "
            "rounds alternating model and canary (TVM_NUM_THREADS = threads); compare "
            "median(model / canary) with latency.<profile>.normalized (and verified)",
            "model_input": [1, *cand.input_shape],
            "canary_input": list(CANARY_SHAPE),
            "threads": {p: st.threads for p, st in latency.items()},
        },
        "notes": [
            "Weights are stored packed at their bit-widths (weights.packed.safetensors): "
            "integer, ternary and binary levels with per-channel scales, k-means indices with "
            "each layer's codebook, sparse layers as a bitmask plus their non-zero values; "
            "model.pt and model.onnx hold the same values as float32.",
            "Weight sharing (k-means) and unstructured sparsity shrink the stored size only: "
            "those layers compute as dense float (or int8) weights on these targets, so their "
            "latency is that of the dense structure (structure.layers[].computes_as).",
            "Latency: the compressed graph compiled by TVM per profile (int8 layers as int8 x "
            "int8 -> int32 kernels with requantization, fp16 on GPUs, fp32 otherwise), "
            "MetaSchedule-tuned on CPUs (XGBoost cost model); timed interleaved with the "
            "profile's canary (normalized = model / canary), with training on the node held "
            "(quiet = lease); see latency.<profile> and, for Pareto models, verified.",
        ],
    }
