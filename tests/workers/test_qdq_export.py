"""8-bit models exported to ONNX as QuantizeLinear / DequantizeLinear pairs, run in onnxruntime."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from search_spaces import FAMILIES, Candidate
from tests.workers.factories import candidate, inputs, net_of
from workers.compress import (
    ActQuant,
    attach_act_quant,
    calibrate,
    fold_batchnorm,
    qdq_weights,
    quantize_weights,
)
from workers.models import Net, weight_layers


def _ptq_qdq(family: str) -> tuple[Candidate, Net, Net]:
    """An 8-bit (weights and activations) PTQ model and its QDQ export copy."""
    cand = candidate(family, wbits=8, abits=8, head_wbits=8, head_abits=8)
    net = fold_batchnorm(net_of(cand))
    attach_act_quant(net)
    calibrate(net, [inputs(cand, batch=32, seed=s) for s in (10, 11)])
    quantize_weights(net)
    return cand, net, qdq_weights(copy.deepcopy(net)).eval()


def _export(model: nn.Module, x: torch.Tensor, path: Path) -> onnx.ModelProto:
    torch.onnx.export(
        model,
        (x,),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    return onnx.load(str(path))


def _run(path: Path, x: torch.Tensor, optimize: bool) -> np.ndarray:
    so = ort.SessionOptions()
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    (out,) = sess.run(["logits"], {"input": x.numpy()})
    return np.asarray(out)


@pytest.mark.parametrize("family", FAMILIES)
def test_qdq_export_has_quantize_linear_nodes_that_onnxruntime_runs(
    family: str, tmp_path: Path
) -> None:
    cand, net, qdq = _ptq_qdq(family)
    x = inputs(cand, batch=16, seed=12)
    with torch.no_grad():
        ref = net(x).numpy()
        torch.testing.assert_close(qdq(x), net(x), atol=0, rtol=0)  # QDQ of baked weights
    model = _export(qdq, x[:1], tmp_path / "m.onnx")
    ops = [node.op_type for node in model.graph.node]
    n_weights = len(weight_layers(net))  # every layer is 8-bit
    n_acts = sum(isinstance(m, ActQuant) for m in net.modules())
    # one pair per weight and per activation quantizer (the exporter merges identical
    # quantizers of one tensor, e.g. a ResNet block's c1 and down reading the same input)
    assert ops.count("QuantizeLinear") == ops.count("DequantizeLinear")
    assert n_weights < ops.count("QuantizeLinear") <= n_weights + n_acts
    # the graph as written computes what PyTorch does, at any batch size (up to a rare
    # one-level rounding flip)
    out = _run(tmp_path / "m.onnx", x, optimize=False)
    assert np.isclose(out, ref, atol=1e-4, rtol=0).mean() > 0.9
    np.testing.assert_allclose(out, ref, atol=0.05, rtol=0)
    np.testing.assert_array_equal(out.argmax(1), ref.argmax(1))


def test_qdq_export_predicts_like_pytorch_in_optimized_onnxruntime(tmp_path: Path) -> None:
    cand, net, qdq = _ptq_qdq("cnn")
    x = inputs(cand, batch=16, seed=12)
    with torch.no_grad():
        ref = net(x).numpy()
    _export(qdq, x[:1], tmp_path / "m.onnx")
    out = _run(tmp_path / "m.onnx", x, optimize=True)
    np.testing.assert_array_equal(out.argmax(1), ref.argmax(1))
