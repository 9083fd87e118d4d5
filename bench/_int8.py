"""int8 against fp32, and against what users would run instead (ONNX Runtime's static int8).

"ORT's int8" is ``onnxruntime.quantization.quantize_static`` (QDQ, u8 activations, s8
per-channel weights) applied to the fp32 model's ONNX export, as ``../shared/FACTS.md``
measured it; ORT's fp32 and int8 sessions are timed interleaved (1 thread, batch 1). The
benchmarks time random-weight structures (latency does not depend on trained values), so the
calibration batches are random normal inputs of the model's shape.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from examples.tvm_vs_ort import interleaved
from hw_profiles.isa import resolve_int8_dot
from search_spaces import Candidate
from workers.compress.quantize import attach_act_quant, calibrate, quantize_weights
from workers.export import export_onnx
from workers.models import LayerSpec, weight_layers
from workers.probe import ProbeOptions, probe

CALIBRATION_BATCHES = 8


def with_precision(cand: Candidate, bits: int) -> Candidate:
    """``cand``'s structure with every layer at ``bits`` (8: int8 weights and activations,
    32: float), no sparsity or codebooks: the int8 / fp32 twins of one structure."""
    fmt = "int" if bits == 8 else "float"
    codes = {"wformat": fmt, "wbits": bits, "abits": bits, "sparsity": 0.0}
    stages = tuple(
        s.model_copy(
            update={
                **codes,
                "blocks": None
                if s.blocks is None
                else tuple(b.model_copy(update=codes) for b in s.blocks),
            }
        )
        for s in cand.stages
    )
    return cand.model_copy(update={"stages": stages, "head_wbits": bits, "head_abits": bits})


def int8_copy(net: torch.nn.Module, example: torch.Tensor) -> torch.nn.Module:
    """A copy of the float ``net`` with every conv / linear int8 (weights and activations),
    BN folded, calibrated on random inputs."""
    q = copy.deepcopy(net).eval()
    for _, layer in weight_layers(q):
        layer.hw = LayerSpec(wformat="int", wbits=8, abits=8)  # type: ignore[assignment]
    attach_act_quant(q)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(0)
    calibrate(q, [torch.randn(16, *example.shape[1:], generator=g) for _ in range(4)])  # type: ignore[arg-type]
    return quantize_weights(q)  # type: ignore[arg-type]


def ort_fp32_int8_ms(model: torch.nn.Module, example: torch.Tensor) -> dict[str, float]:
    """ORT's fp32 session of ``model``'s ONNX and its static-int8 quantization, timed
    interleaved (rounds alternate the two), 1 thread, batch 1: medians in ms."""
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    g = torch.Generator().manual_seed(1)
    feeds = [
        {"input": torch.randn(*example.shape, generator=g).numpy()}
        for _ in range(CALIBRATION_BATCHES)
    ]

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "m.onnx", Path(tmp) / "m.int8.onnx"
        export_onnx(model, example, fp32)
        quantize_static(
            str(fp32),
            str(int8),
            _Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        sessions = [
            ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
            for p in (fp32, int8)
        ]
    feed = {"input": example.numpy()}
    fp32_ms, int8_ms = interleaved([lambda s=s: s.run(None, feed) for s in sessions])  # type: ignore[misc]
    return {"ort_fp32_ms": fp32_ms, "ort_int8_ms": int8_ms}


def resnet18_pair(profile: Any, work: Path, tune_budget_s: float) -> dict[str, Any]:
    """A ResNet-18-style net (CIFAR stem, width 1) at 3x32x32: TVM fp32 and TVM int8 (same
    structure, each MetaSchedule-tuned within ``tune_budget_s``), ORT fp32 and ORT int8."""
    from workers.networks.zoo import resnet18

    torch.manual_seed(0)
    net = resnet18(10).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    fused = _fold(net)
    example = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    check = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    options = ProbeOptions(tuning_root=work / "tuning", tune_budget_s=tune_budget_s)
    f = probe(fused, example, profile, options=options, check_inputs=check)
    q = probe(int8_copy(fused, example), example, profile, options=options, check_inputs=check)
    ort = ort_fp32_int8_ms(fused, example)
    ratio = f.normalized / q.normalized if f.normalized and q.normalized else None
    return {
        "model": "ResNet-18 (CIFAR stem, width 1.0), 3x32x32, batch 1, 1 thread, BN folded",
        "int8_dot": resolve_int8_dot(profile),
        "isa": q.isa,
        "tvm_fp32_ms": f.median_ms,
        "tvm_int8_ms": q.median_ms,
        "tvm_fp32_partial": f.partial,
        "tvm_int8_partial": q.partial,
        "tvm_int8_precision": q.precision,
        "int8_speedup_over_fp32": ratio,
        "speedup_note": "canary-normalized: (fp32 / canary) / (int8 / canary), each library "
        "timed interleaved with the profile's canary in its own window",
        **ort,
        "ort_int8_speedup_over_fp32": ort["ort_fp32_ms"] / ort["ort_int8_ms"],
        "tvm_int8_over_ort_int8": q.median_ms / ort["ort_int8_ms"],
    }


def _fold(net: torch.nn.Module) -> torch.nn.Module:
    """Fold every (conv, BatchNorm) pair of the zoo ResNet into the conv (BN -> Identity)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    out = copy.deepcopy(net).eval()
    pairs = [(out, "conv1", "bn1")]
    for m in out.modules():
        if hasattr(m, "conv2") and hasattr(m, "bn2"):
            pairs += [(m, "conv1", "bn1"), (m, "conv2", "bn2")]
        if (
            isinstance(m, torch.nn.Sequential)
            and len(m) == 2
            and isinstance(m[1], torch.nn.BatchNorm2d)
        ):
            m[0] = fuse_conv_bn_eval(m[0], m[1])
            m[1] = torch.nn.Identity()
    for mod, c, b in pairs:
        setattr(mod, c, fuse_conv_bn_eval(getattr(mod, c), getattr(mod, b)))
        setattr(mod, b, torch.nn.Identity())
    return out
