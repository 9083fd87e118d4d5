"""Quality bars of the compression passes on real Fashion-MNIST (fixed seeds, CPU).

One dense CNN is trained per session (cached on disk); each test compresses it one way and
checks accuracy on the full 10k test split against the issue's bars. Marked slow (CI runs it).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from search_spaces import Candidate, Stage
from workers.compress import (
    attach_act_quant,
    calibrate,
    factorize_layer,
    fold_batchnorm,
    group_width,
    keep_count,
    quantize_weights,
    tucker2_conv,
    write_packed,
)
from workers.compress.pipeline import quantize_child, shrink
from workers.data import Splits, load_splits
from workers.export import export_onnx
from workers.models import Net, assign_bits, count_params
from workers.parents import trained_parent
from workers.train import Recipe, accuracy, batches, predict

pytestmark = pytest.mark.slow
FASHION = Path("/usr/share/datasets/fashion-mnist")
RECIPE = Recipe(
    epochs=4,
    finetune_epochs=2,
    qat_epochs=2,
    batch_size=128,
    lr=3e-3,
    finetune_lr=1e-3,
    train_subset=None,
    seed=0,
)


def _cand(prune: float = 0.0, wbits: int = 32, abits: int = 32) -> Candidate:
    return Candidate(
        space="test",
        family="cnn",
        input_shape=(1, 28, 28),
        num_classes=10,
        stages=(
            Stage(width=32, stride=2, prune=prune, wbits=wbits, abits=abits),
            Stage(width=64, stride=2, prune=prune, wbits=wbits, abits=abits),
        ),
        head_wbits=8 if wbits < 32 else 32,
        head_abits=abits,
    )


@pytest.fixture(scope="module")
def data() -> Splits:
    if not (FASHION / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.fail("Fashion-MNIST missing: `make test` installs dataset-fashion-mnist")
    splits = load_splits("fashion_mnist", 0)
    idx = np.random.default_rng(0).permutation(len(splits.train))[:30_000]
    return Splits(
        type(splits.train)(splits.train.x[idx], splits.train.y[idx]),
        splits.val,
        splits.test,
        0,
        splits.preprocessing,
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("parents")


def _parent(cand: Candidate, data: Splits, cache: Path) -> Net:
    torch.set_num_threads(2)
    net, _ = trained_parent(
        cand,
        dataset="fashion_mnist-30k",
        split_seed=0,
        recipe=RECIPE,
        train_data=data.train,
        cache_dir=cache,
    )
    return net


@pytest.fixture(scope="module")
def dense_acc(data: Splits, cache: Path) -> float:
    acc = accuracy(fold_batchnorm(copy.deepcopy(_parent(_cand(), data, cache))), data.test)
    assert acc > 0.8, f"dense parent only reaches {acc:.3f}"  # a trained model (chance: 0.1)
    return acc


def test_pruned_quarter_keeps_accuracy_within_2_points(
    data: Splits, cache: Path, dense_acc: float
) -> None:
    parent = _parent(_cand(prune=0.25), data, cache)
    widths = {g.name: group_width(parent, g) for g in parent.groups}
    child = shrink(parent, data.train, RECIPE)
    for g in child.groups:
        kept = group_width(child, g) / widths[g.name]
        assert abs(kept - 0.75) <= 0.05, (g.name, kept)
        assert group_width(child, g) == keep_count(widths[g.name], 0.25)
    assert count_params(child) < count_params(parent)
    acc = accuracy(child, data.test)
    assert acc >= dense_acc - 0.02, f"pruned {acc:.4f} vs dense {dense_acc:.4f}"


def test_lowrank_full_rank_exact_and_quarter_rank_compresses(data: Splits, cache: Path) -> None:
    parent = _parent(_cand(), data, cache)
    conv = parent.stages[1][0].conv  # the trained 32 -> 64 3x3 conv
    x = torch.from_numpy(data.test.x[:64])
    with torch.no_grad():
        feats = parent.stages[0](parent.stem(x))
        ref = conv(feats)
        full = min(conv.weight.shape[0], conv.weight[0].numel())
        assert (factorize_layer(conv, full)(feats) - ref).abs().max() < 1e-4
        assert (tucker2_conv(conv, 32, 64)(feats) - ref).abs().max() < 1e-4

    def params(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    # Tucker-2 at 1/4 of (in, out) = (8, 16): 32*8 + 8*16*9 + 16*64 = 2432 vs 18432 (7.6x)
    assert params(conv) / params(tucker2_conv(conv, 8, 16)) >= 3.5
    # SVD of the (out, in*k*k) unfolding at 1/4 of full rank, for a 64 -> 64 3x3 conv:
    # r = 16: 16 * (576 + 64) = 10240 vs 36864 (3.6x). (A square linear at 1/4 rank is 2x:
    # r * (n + n) = n^2 / 2, so the bar is met by conv layers, where fan_in = in * k * k.)
    wide = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False)
    assert params(wide) / params(factorize_layer(wide, 16)) >= 3.5


def test_ptq8_within_1_point_and_qdq_onnx_agrees(
    data: Splits, cache: Path, dense_acc: float, tmp_path: Path
) -> None:
    parent = _parent(_cand(wbits=8, abits=8), data, cache)
    q = fold_batchnorm(copy.deepcopy(parent))
    attach_act_quant(q, "percentile")
    calibrate(q, [x for x, _ in batches(data.train, 128, 16, 1)])
    quantize_weights(q)
    acc = accuracy(q, data.test)
    assert acc >= dense_acc - 0.01, f"8-bit PTQ {acc:.4f} vs fp32 {dense_acc:.4f}"
    export_onnx(q, torch.zeros(1, 1, 28, 28), tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    ops = {n.op_type for n in __import__("onnx").load(str(tmp_path / "m.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    onnx_pred = np.concatenate(
        [
            sess.run(None, {"input": data.test.x[i : i + 1000]})[0].argmax(1)
            for i in range(0, len(data.test), 1000)
        ]
    )
    agree = float((onnx_pred == predict(q, data.test)).mean())
    assert agree >= 0.99, f"ONNX QDQ argmax agrees on {agree:.4f} of test images"


def test_qat4_within_3_points(data: Splits, cache: Path, dense_acc: float) -> None:
    parent = _parent(_cand(wbits=4, abits=8), data, cache)
    q, info = quantize_child(copy.deepcopy(parent), data.train, RECIPE, parent)
    assert info["quantization"] == "qat"
    acc = accuracy(q, data.test)
    assert acc >= dense_acc - 0.03, f"4-bit QAT {acc:.4f} vs fp32 {dense_acc:.4f}"


def test_reported_size_is_the_serialized_file(data: Splits, cache: Path, tmp_path: Path) -> None:
    parent = _parent(_cand(), data, cache)
    sizes = {}
    for wbits in (32, 8, 4):
        q = assign_bits(fold_batchnorm(copy.deepcopy(parent)), _cand(wbits=wbits))
        quantize_weights(q)
        path = tmp_path / f"w{wbits}.safetensors"
        reported = write_packed(path, q)
        assert abs(reported - path.stat().st_size) <= 0.01 * path.stat().st_size
        sizes[wbits] = reported
    weights = sum(
        m.weight.numel()
        for m in parent.modules()
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)
    )
    assert sizes[32] >= 4 * weights  # float32 weights at least
    assert sizes[8] < sizes[32] / 3 and sizes[4] < sizes[8] * 0.6
