"""The compression order on a copy of a parent: prune -> factorize -> fine-tune -> fold -> quantize.

Each pass has its own module (test_prune, test_lowrank, test_fold, test_quantize, test_pack);
this checks that the pipeline composes them as the candidate and the recipe say.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from tests.workers.factories import candidate, net_of
from workers.compress import ActQuant, fake_quant, group_width, keep_count
from workers.compress.pipeline import compress
from workers.data import Split
from workers.models import Net, spec_of, weight_layers
from workers.train import Recipe

FAST = {"finetune_epochs": 1, "qat_epochs": 1, "batch_size": 32, "calib_batches": 2}


def _split(shape: tuple[int, ...], n: int = 64) -> Split:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, *shape)).astype(np.float32)
    return Split(x, (np.arange(n) % 10).astype(np.int64))


def _state(net: Net) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items()}


def _assert_on_grid(net: Net) -> None:
    """Every weight lies on the grid of its layer's bits (stem and head: head_wbits)."""
    for name, layer in weight_layers(net):
        w = layer.weight.detach()
        torch.testing.assert_close(fake_quant(w, spec_of(layer).wbits), w, atol=0, rtol=0, msg=name)


def _out_channels(stage: nn.Module) -> int:
    """Output channels of a stage's last conv (or last factor of a factorized one)."""
    _, last = weight_layers(stage)[-1]
    return int(last.weight.shape[0])


def test_compress_shrinks_and_quantizes_a_copy_and_leaves_the_parent() -> None:
    cand = candidate("resnet", wbits=8, abits=8, prune=0.5, rank=0.5)
    parent = net_of(cand)
    widths = {g.name: group_width(parent, g) for g in parent.groups}
    before = _state(parent)
    child, info = compress(parent, _split(cand.input_shape), Recipe(**FAST))

    after = parent.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the parent is untouched

    assert not any(isinstance(m, nn.BatchNorm2d) for m in child.modules())  # folded
    assert any(isinstance(m, nn.Sequential) and len(m) == 3 for m in child.modules())  # Tucker
    assert child.stem.conv.out_channels == keep_count(widths["stream.stem"], 0.5)
    quants = [m for m in child.modules() if isinstance(m, ActQuant)]
    assert info == {"act_quantizers": len(quants), "clustered_layers": 0, "quantization": "ptq"}
    assert quants and all(q.ready for q in quants)
    _assert_on_grid(child)
    assert not child.training
    with torch.no_grad():
        out = child(torch.from_numpy(_split(cand.input_shape, 4).x))
    assert out.shape == (4, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("wbits", "quant", "expected"),
    [(4, "auto", "qat"), (8, "auto", "ptq"), (4, "ptq", "ptq"), (8, "qat", "qat")],
)
def test_quantization_mode_follows_bits_and_recipe(wbits: int, quant: str, expected: str) -> None:
    cand = candidate("mlp", wbits=wbits)
    child, info = compress(net_of(cand), _split(cand.input_shape), Recipe(**FAST, quant=quant))
    assert info["quantization"] == expected
    assert info["act_quantizers"] == 0  # abits 32 everywhere
    assert not any(parametrize.is_parametrized(m) for _, m in weight_layers(child))  # baked
    _assert_on_grid(child)


@pytest.mark.parametrize(
    "recipe",
    [
        {"prune_criterion": "taylor", "prune_steps": 2},
        {"prune_criterion": "bn_gamma", "conv_decomposition": "svd", "kd": False},
        {"rank_energy": 0.9, "act_observer": "mse", "weight_observer": "mse"},
        {"feature_kd": 1.0, "train_subset": 32, "act_observer": "percentile"},
    ],
    ids=["taylor-iterative", "bn-gamma-svd-nokd", "energy-mse", "feature-kd-subset"],
)
def test_recipe_options_run_through_the_pipeline(recipe: dict[str, Any]) -> None:
    cand = candidate("cnn", wbits=8, abits=8, prune=0.5, rank=0.5)
    parent = net_of(cand)
    child, info = compress(parent, _split(cand.input_shape), Recipe(**FAST, **recipe))
    assert [_out_channels(stage) for stage in child.stages] == [8, 16]  # pruned
    assert child.head.in_features == 16
    assert info["quantization"] == "ptq"
    with torch.no_grad():
        assert torch.isfinite(child(torch.from_numpy(_split(cand.input_shape, 4).x))).all()
