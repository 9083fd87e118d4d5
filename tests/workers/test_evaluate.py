"""The worker pipeline end to end on a tiny MLP: metrics, bundle files, parent cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors.numpy import load_file

from workers.data import load_splits
from workers.evaluate import evaluate, evaluate_json
from workers.records import EvalRequest, EvalResult

RECIPE = {"epochs": 3, "finetune_epochs": 1, "seed": 0}


def _candidate(wbits: int, prune: float, rank: float, abits: int = 32) -> dict[str, Any]:
    return {
        "space": "mlp_small",
        "family": "mlp",
        "input_shape": [64],
        "num_classes": 10,
        "stages": [{"width": 32, "wbits": wbits, "abits": abits, "prune": prune, "rank": rank}],
        "head_wbits": 8,
    }


def _request(
    cand: dict[str, Any], tmp_path: Path, bundle: str, profiles: list[str]
) -> dict[str, Any]:
    return {
        "candidate": cand,
        "dataset": "digits",
        "profiles": profiles,
        "bundle_dir": str(tmp_path / bundle),
        "cache_dir": str(tmp_path / "parents"),
        "split_seed": 0,
        "threads": 1,
        "recipe": RECIPE,
    }


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Any:
    n = torch.get_num_threads()  # evaluate_candidate sets the process-wide thread count
    yield
    torch.set_num_threads(n)


def test_evaluate_candidate_bundle_and_parent_cache(tmp_path: Path) -> None:
    cand = _candidate(wbits=4, prune=0.25, rank=1.0)
    payload = evaluate_json(_request(cand, tmp_path, "a", ["x86/local"]))
    json.dumps(payload)  # JSON-ready: it crosses a Ray task boundary
    result = EvalResult.model_validate(payload)

    m = result.metrics
    assert m.accuracy is not None and m.test_accuracy is not None
    assert 0 < m.accuracy <= 1 and 0 < m.test_accuracy <= 1
    assert m.test_accuracy_ci95 is not None and m.test_n is not None
    lo, hi = m.test_accuracy_ci95
    assert lo < m.test_accuracy < hi and hi - lo < 0.2  # Wilson interval of ~360 test images
    assert m.parent_accuracy is not None and 0 < m.parent_accuracy <= 1
    assert m.size_bytes > 0 and m.params is not None and m.params > 0
    assert m.dense_size_bytes is not None and m.dense_size_bytes > m.size_bytes
    assert set(m.latency_ms) == {"x86/local"} and m.latency_ms["x86/local"] > 0
    st = result.latency["x86/local"]
    assert st.max_abs_err is not None and st.max_abs_err < 1e-4
    assert st.latency_source == "measured" and st.quiet == "lease"
    assert st.canary_ms is not None and st.normalized is not None
    assert st.normalized == pytest.approx(st.median_ms / st.canary_ms, rel=0.5)
    assert result.parent_cache_hit is False
    # every shipped file scores what the card says, each run by its own runtime
    assert set(result.files) == {"onnx", "torchscript", "tvm:x86/local"}
    for name, f in result.files.items():
        assert f.test_accuracy == pytest.approx(m.test_accuracy, abs=0.002), name
        assert f.agrees_with_card is True, name

    assert result.bundle_dir is not None
    bundle = Path(result.bundle_dir)
    assert bundle == tmp_path / "a"
    for name in (
        "model.onnx",
        "model.pt",
        "card.json",
        "weights.packed.safetensors",
        "tvm/x86_local.so",
        "tvm/x86_local.canary.so",
    ):
        assert (bundle / name).is_file(), name
    weights = bundle / "weights.packed.safetensors"
    packed = load_file(str(weights))
    # the size is the file's bytes: the stored arrays plus the safetensors header
    assert m.size_bytes == weights.stat().st_size
    header = 8 + int.from_bytes(weights.read_bytes()[:8], "little")
    assert m.size_bytes == sum(int(a.nbytes) for a in packed.values()) + header
    assert m.quantization == "qat"  # a 4-bit layer: auto picks QAT
    assert "stages.0.0.fc.weight.packed" in packed  # 4-bit layer stored packed
    assert packed["stages.0.0.fc.weight.packed"].size == 24 * 64 // 2  # 32 - 25% = 24 rows

    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    scripted = torch.jit.load(str(bundle / "model.pt"))
    with torch.no_grad():
        ref = scripted(torch.from_numpy(x)).numpy()
    sess = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    (onnx_out,) = sess.run(["logits"], {"input": x})
    assert onnx_out.shape == (4, 10)
    np.testing.assert_allclose(onnx_out, ref, atol=1e-4, rtol=0)

    card = json.loads((bundle / "card.json").read_text())
    assert card["schema_version"] == 2
    assert card["candidate"]["stages"][0]["wbits"] == 4
    assert card["candidate"]["schema_version"] == 3
    assert card["metrics"]["size_bytes"] == m.size_bytes
    assert card["accuracy"]["test_accuracy"] == m.test_accuracy
    assert card["file_scores"]["onnx"]["test_accuracy"] == result.files["onnx"].test_accuracy
    assert card["latency"]["x86/local"]["canary_id"] == st.canary_id
    assert card["files"]["canary"] == {"x86/local": "tvm/x86_local.canary.so"}
    test_idx = card["data"]["test_indices"]
    splits = load_splits("digits", 0)
    assert splits.test.index is not None
    assert test_idx == splits.test.index.tolist()
    assert card["data"]["sizes"]["test"] == len(test_idx)
    assert card["files"]["tvm"] == {"x86/local": "tvm/x86_local.so"}

    # Same architecture, other compression: the trained parent comes from the cache.
    other = evaluate(
        EvalRequest.model_validate(
            _request(_candidate(wbits=8, prune=0.5, rank=0.5, abits=8), tmp_path, "b", [])
        )
    )
    assert other.parent_cache_hit is True
    assert other.metrics.parent_accuracy == m.parent_accuracy
    assert other.metrics.latency_ms == {}
    assert other.metrics.quantization == "ptq"
    assert len(list((tmp_path / "parents").glob("*.safetensors"))) == 1
    # 8-bit weights and activations are QuantizeLinear / DequantizeLinear pairs in the ONNX
    assert other.bundle_dir is not None
    b = Path(other.bundle_dir)
    ops = [node.op_type for node in onnx.load(str(b / "model.onnx")).graph.node]
    assert ops.count("QuantizeLinear") == ops.count("DequantizeLinear") >= 3  # 2 weights + 1 act
    so = ort.SessionOptions()  # the graph as written (see test_quantize for optimized kernels)
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(b / "model.onnx"), so, providers=["CPUExecutionProvider"])
    (onnx_out,) = sess.run(["logits"], {"input": x})
    with torch.no_grad():
        ref = torch.jit.load(str(b / "model.pt"))(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(onnx_out, ref, atol=0.05, rtol=0)
    np.testing.assert_array_equal(onnx_out.argmax(1), ref.argmax(1))


@pytest.mark.parametrize(
    "code",
    [
        {"wbits": 2, "wformat": "ternary", "abits": 8, "sparsity": 0.5},
        {"wbits": 1, "wformat": "binary", "abits": 8},
        {"wbits": 4, "wformat": "kmeans", "sparsity": 0.75},
    ],
    ids=["ternary-sparse-int8", "binary-int8", "kmeans-sparse"],
)
def test_toolbox_candidates_ship_files_that_score_the_card(
    code: dict[str, Any], tmp_path: Path
) -> None:
    """Ternary, binary, codebook and sparse layers through the whole worker: every shipped
    file (TorchScript, ONNX, the TVM library) scores the card's accuracy, and the card says
    what each layer stores and how it computes."""
    cand = _candidate(wbits=32, prune=0.0, rank=1.0)
    cand["stages"][0] |= code
    result = EvalResult.model_validate(evaluate_json(_request(cand, tmp_path, "t", ["x86/local"])))
    m = result.metrics
    assert m.test_accuracy is not None and m.test_accuracy > 0.5  # digits, 3 epochs
    for name, f in result.files.items():
        assert f.agrees_with_card is True, (name, f)
    card = json.loads((tmp_path / "t" / "card.json").read_text())
    (layer, _head) = card["structure"]["layers"]
    assert layer["wformat"] == code["wformat"] and layer["wbits"] == code["wbits"]
    assert layer["sparsity"] >= code.get("sparsity", 0.0) - 0.01
    if code["wformat"] == "kmeans":
        assert layer["codebook_bits"] == 4 and "dense float32" in layer["computes_as"]
    else:
        assert layer["computes_as"].startswith("int8 kernel")
    if code.get("sparsity"):
        assert "run dense" in layer["computes_as"]
    assert any("Weight sharing (k-means) and unstructured sparsity" in n for n in card["notes"])
    assert m.dense_size_bytes is not None and m.size_bytes < m.dense_size_bytes / 4
