"""TVM latency probe on x86/local: numerics match PyTorch, stats are sane, smaller is faster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from hw_profiles import Profile, get_profile
from search_spaces import Candidate, Stage
from tests.workers.factories import candidate, inputs, net_of
from workers.compress import factorize_model, fold_batchnorm, prune_model
from workers.models import Net, build_model, example_input
from workers.probe import ProbeError, probe_latency


def _cand(family: str, shape: tuple[int, ...], *stages: Stage) -> Candidate:
    return Candidate(
        space="test",
        family=family,  # type: ignore[arg-type]
        input_shape=shape,
        num_classes=10,
        stem_width=8 if family in ("mbv2", "resnet") else None,
        stages=stages,
    )


def _net(cand: Candidate) -> Net:
    torch.manual_seed(0)
    return build_model(cand).eval()


def _check_stats(stats: dict[str, Any], profile: Profile) -> None:
    assert stats["max_abs_err"] < 1e-4
    assert stats["median_ms"] > 0
    assert stats["min_ms"] <= stats["median_ms"] <= stats["max_ms"]
    assert stats["cv"] >= 0
    assert stats["iqr_ms"] >= 0
    assert stats["repeat"] == profile.measure.repeat
    assert stats["number"] == profile.measure.number
    assert stats["tuning"] == "untuned"
    assert stats["precision"] == "fp32-graph"
    target = json.loads(stats["target"])
    assert target["kind"] == "llvm"
    assert target["mcpu"] != "host"  # resolved to this machine's CPU
    assert stats["compile_s"] > 0


def test_probe_small_models_and_pruned_is_faster(tmp_path: Path) -> None:
    profile = get_profile("x86/local")

    mlp = _cand("mlp", (64,), Stage(width=32))
    lib = tmp_path / "tvm" / "mlp.so"
    stats = probe_latency(_net(mlp), example_input(mlp), profile, library_path=lib)
    _check_stats(stats, profile)
    assert lib.is_file() and lib.stat().st_size > 0

    cnn = _cand("cnn", (1, 8, 8), Stage(width=8, stride=2), Stage(width=16))
    net = _net(cnn)
    with torch.no_grad():  # non-trivial BN so the lowered BN arithmetic is checked
        for bn in net.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.running_mean.uniform_(-1, 1)
                bn.running_var.uniform_(0.5, 2)
    _check_stats(probe_latency(net, example_input(cnn), profile), profile)

    # The same architecture, 50% pruned and factorized, must measure faster than dense.
    big = _cand("mlp", (64,), Stage(width=512, prune=0.5), Stage(width=512, prune=0.5, rank=0.25))
    dense = _net(big)
    small = prune_model(_net(big), "l1")
    fold_batchnorm(small)
    factorize_model(small)
    assert isinstance(small.stages[1][0].fc, torch.nn.Sequential)
    example = example_input(big)
    t_dense = probe_latency(dense, example, profile)
    t_small = probe_latency(small, example, profile)
    _check_stats(t_small, profile)
    ratio = t_small["median_ms"] / t_dense["median_ms"]
    assert ratio < 1, (
        f"pruned+factorized {t_small['median_ms']:.4f} ms vs dense {t_dense['median_ms']:.4f} ms"
    )


@pytest.mark.parametrize("family", ["mbv2", "resnet"])
def test_probe_lowers_compressed_residual_families_exactly(family: str) -> None:
    """Pruned residual streams, depthwise convs, Tucker factors and folded BN all lower to TVM
    and compute what PyTorch does."""
    cand = candidate(family, prune=0.5, rank=0.5)
    net = fold_batchnorm(factorize_model(prune_model(net_of(cand), "l1")))
    profile = get_profile("x86/local")
    stats = probe_latency(net, inputs(cand, batch=1), profile)
    _check_stats(stats, profile)


def test_probe_refuses_rpc_profiles() -> None:
    profile = Profile.model_validate(
        {
            "name": "arm/board",
            "target": {"kind": "llvm"},
            "measure": {"via": "rpc", "host": "127.0.0.1:9090"},
        }
    )
    mlp = _cand("mlp", (64,), Stage(width=16))
    with pytest.raises(ProbeError, match="measures via 'rpc'"):
        probe_latency(_net(mlp), example_input(mlp), profile)
