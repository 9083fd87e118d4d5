"""BatchNorm folding: the deployed graph has no BN and computes what the eval model did."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.workers.factories import candidate, inputs, net_of
from workers.compress import factorize_model, fold_batchnorm, prune_model

IMAGE_FAMILIES = ("cnn", "mbv2", "resnet")


def _assert_folded(net: nn.Module) -> None:
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())


@pytest.mark.parametrize("family", IMAGE_FAMILIES)
def test_fold_batchnorm_reproduces_eval_outputs(family: str) -> None:
    cand = candidate(family)
    net = net_of(cand)
    x = inputs(cand, batch=8)
    with torch.no_grad():
        ref = net(x)
        fold_batchnorm(net)
        out = net.eval()(x)
    _assert_folded(net)
    for conv_path, bn_path in net.conv_bn:
        assert isinstance(net.get_submodule(bn_path), nn.Identity)
        assert net.get_submodule(conv_path).bias is not None
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", IMAGE_FAMILIES)
def test_fold_after_prune_reproduces_pruned_outputs(family: str) -> None:
    cand = candidate(family, prune=0.5)
    net = prune_model(net_of(cand), "l1")
    x = inputs(cand)
    with torch.no_grad():
        ref = net(x)
        out = fold_batchnorm(net)(x)
    _assert_folded(net)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["tucker2", "svd"])
@pytest.mark.parametrize("family", IMAGE_FAMILIES)
def test_fold_after_factorization_folds_into_the_last_factor(family: str, method: str) -> None:
    cand = candidate(family, prune=0.25, rank=0.5)
    net = prune_model(net_of(cand), "l1")
    factorize_model(net, conv_method=method)  # type: ignore[arg-type]
    factorized = [p for p, _ in net.conv_bn if isinstance(net.get_submodule(p), nn.Sequential)]
    assert factorized, "rank 0.5 factorizes some conv that has a BN"
    x = inputs(cand, batch=8)
    with torch.no_grad():
        ref = net(x)
        out = fold_batchnorm(net)(x)
    _assert_folded(net)
    for path in factorized:
        *_, last = net.get_submodule(path)
        assert last.bias is not None
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)


def test_fold_is_a_no_op_on_mlps() -> None:
    cand = candidate("mlp")
    net = net_of(cand)
    x = inputs(cand)
    with torch.no_grad():
        ref = net(x)
        out = fold_batchnorm(net)(x)
    assert net.conv_bn == []
    torch.testing.assert_close(out, ref, atol=0, rtol=0)
