"""Structured pruning: channels leave every tensor of their group, and the right ones leave."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from search_spaces import FAMILIES
from tests.workers.factories import (
    candidate,
    inputs,
    labels,
    member_width,
    net_of,
    silence,
)
from workers.compress import CRITERIA, factorize_model, group_width, keep_count, prune_model
from workers.models import ChannelGroup, Net, count_params, get_module

Batches = Callable[[], list[tuple[torch.Tensor, torch.Tensor]]]


def _batches(family: str) -> Batches:
    """Two labelled batches, fresh on each call (what prune_model's Taylor criterion takes)."""
    cand = candidate(family)
    return lambda: [(inputs(cand, batch=32, seed=s), labels(32)) for s in (5, 6)]


def _channel_tag(net: Net, grp: ChannelGroup) -> Callable[[Net], torch.Tensor]:
    """A per-channel vector that identifies the group's channels: a BN's running variance, or
    a linear layer's bias (both random and distinct)."""
    for m in grp.members:
        mod = get_module(net, m.path)
        if isinstance(mod, nn.BatchNorm2d):
            return lambda n, p=m.path: get_module(n, p).running_var
        if isinstance(mod, nn.Linear) and m.role == "out":
            return lambda n, p=m.path: get_module(n, p).bias.detach()
    raise AssertionError(grp.name)


def _assert_consistent(net: Net, widths: dict[str, int]) -> None:
    """Every member of every group has exactly the width the group should have."""
    for g in net.groups:
        for m in g.members:
            assert member_width(net, m) == widths[g.name], (g.name, m)


@pytest.mark.parametrize("family", FAMILIES)
def test_prune_half_keeps_exact_channel_counts_everywhere(family: str) -> None:
    cand = candidate(family, prune=0.5)
    net = net_of(cand)
    assert net.groups, "every family has prunable groups"
    dense = {g.name: group_width(net, g) for g in net.groups}
    dense_params = count_params(net)
    prune_model(net, "l1")
    kept = {name: keep_count(w, 0.5) for name, w in dense.items()}
    assert all(k == w - w // 2 for k, w in zip(kept.values(), dense.values(), strict=True))
    _assert_consistent(net, kept)
    assert {g.name: group_width(net, g) for g in net.groups} == kept
    assert count_params(net) < dense_params
    with torch.no_grad():
        out = net(inputs(cand))
    assert out.shape == (4, cand.num_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("family", FAMILIES)
def test_pruning_channels_that_carry_nothing_is_exact(family: str, criterion: str) -> None:
    """Half of every group's channels are constructed to be zero everywhere (weights, BN gamma
    and beta): they are the least important by every criterion, and removing them, including
    from whole residual streams, leaves the outputs unchanged."""
    cand = candidate(family, prune=0.5)
    net = net_of(cand)
    g = torch.Generator().manual_seed(3)
    survivors = {}
    for grp in net.groups:
        width = group_width(net, grp)
        order = torch.randperm(width, generator=g)
        dead, alive = order[: width // 2], order[width // 2 :]
        silence(net, grp, dead)
        survivors[grp.name] = torch.sort(alive).values
    tags = {grp.name: _channel_tag(net, grp) for grp in net.groups}
    before = {name: tensor(net)[survivors[name]].clone() for name, tensor in tags.items()}
    x = inputs(cand, batch=8)
    with torch.no_grad():
        ref = net(x)
    prune_model(net, criterion, batches=_batches(family))  # type: ignore[arg-type]
    for name, tensor in tags.items():  # the survivors, in their original order
        torch.testing.assert_close(tensor(net), before[name], atol=0, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref, atol=1e-5, rtol=0)


def test_l1_and_bn_gamma_each_keep_what_they_rank_highest() -> None:
    """Filter L1 norms and BN gammas are constructed in opposite orders: each criterion must
    keep its own top half, and slice the BN, the consumer and nothing else."""
    cand = candidate("cnn", prune=0.5)
    order = torch.randperm(16, generator=torch.Generator().manual_seed(3)).float()
    results = {}
    for criterion in ("l1", "bn_gamma"):
        net = net_of(cand)
        conv, bn = net.stages[0][0].conv, net.stages[0][0].bn
        with torch.no_grad():
            conv.weight.copy_(torch.ones_like(conv.weight) * (order + 1)[:, None, None, None])
            bn.weight.copy_(16 - order)
        before = {
            "w1": net.stages[1][0].conv.weight.detach().clone(),
            "mean": bn.running_mean.clone(),
            "beta": bn.bias.detach().clone(),
        }
        prune_model(net, criterion)  # type: ignore[arg-type]
        kept = torch.nonzero(order >= 8 if criterion == "l1" else order < 8).flatten()
        results[criterion] = kept
        new_conv, new_bn = net.stages[0][0].conv, net.stages[0][0].bn
        torch.testing.assert_close(new_conv.weight[:, 0, 0, 0], order[kept] + 1)
        torch.testing.assert_close(new_bn.weight.detach(), 16 - order[kept])
        torch.testing.assert_close(new_bn.running_mean, before["mean"][kept])
        torch.testing.assert_close(new_bn.bias.detach(), before["beta"][kept])
        w1 = net.stages[1][0].conv.weight.detach()  # consumer: its inputs sliced the same way
        assert w1.shape[0] == 16  # stage 1 keeps 16 of its 32 outputs
        assert w1.shape[1] == 8
    assert set(results["l1"].tolist()).isdisjoint(results["bn_gamma"].tolist())


def test_bn_gamma_falls_back_to_l1_without_batchnorm() -> None:
    cand = candidate("mlp", prune=0.5)
    a, b = prune_model(net_of(cand), "l1"), prune_model(net_of(cand), "bn_gamma")
    for (_, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        torch.testing.assert_close(pa, pb, atol=0, rtol=0)


def test_resnet_residual_stream_is_pruned_as_one() -> None:
    """stem out, every c2 out, the next block's c1/down in and the head in share one width."""
    cand = candidate("resnet", prune=0.5)
    net = net_of(cand)
    assert {"stream.stem", "stream.stage1"} <= {g.name for g in net.groups}
    prune_model(net, "l1")
    stem_stream = keep_count(8, 0.5)
    stage1_stream = keep_count(16, 0.5)
    s0, s1 = net.stages[0], net.stages[1]
    assert net.stem.conv.out_channels == net.stem.bn.num_features == stem_stream
    for blk in s0:  # identity shortcuts: c2 adds onto the stem's stream
        assert blk.c1.conv.in_channels == stem_stream
        assert blk.c2.conv.out_channels == blk.c2.bn.num_features == stem_stream
        assert isinstance(blk.down, nn.Identity)
    assert s1[0].c1.conv.in_channels == s1[0].down.conv.in_channels == stem_stream
    assert s1[0].down.conv.out_channels == s1[0].down.bn.num_features == stage1_stream
    for blk in s1:
        assert blk.c2.conv.out_channels == blk.c2.bn.num_features == stage1_stream
        assert blk.c1.conv.out_channels == blk.c2.conv.in_channels == keep_count(16, 0.5)
    assert s1[1].c1.conv.in_channels == stage1_stream
    assert net.head.in_features == stage1_stream
    with torch.no_grad():
        assert net(inputs(cand)).shape == (4, 10)


def test_mbv2_prunes_only_hidden_channels() -> None:
    cand = candidate("mbv2", prune=0.5)
    net = net_of(cand)
    prune_model(net, "l1")
    assert net.stem.conv.out_channels == 8  # block in/out channels stay
    for blk, (cin, cout, expand) in zip(
        [*net.stages[0], *net.stages[1]], [(8, 16, 4), (16, 16, 4), (16, 24, 2)], strict=True
    ):
        hidden = keep_count(cin * expand, 0.5)
        assert blk.expand.conv.in_channels == cin
        assert blk.expand.conv.out_channels == hidden
        assert blk.dw.conv.groups == blk.dw.conv.out_channels == hidden
        assert blk.project.conv.in_channels == hidden
        assert blk.project.conv.out_channels == cout


def test_iterative_pruning_finetunes_between_rounds_and_ends_like_one_shot() -> None:
    cand = candidate("cnn", prune=0.5)
    seen: list[list[int]] = []

    def finetune(net: Net) -> None:
        seen.append([group_width(net, g) for g in net.groups])

    iterative = prune_model(net_of(cand), "l1", steps=3, finetune=finetune)
    one_shot = prune_model(net_of(cand), "l1")
    # rounds reach 1/3 and 2/3 of the ratio, finetuning after each; the last is not finetuned
    assert seen == [[keep_count(w, 0.5 * i / 3) for w in (16, 32)] for i in (1, 2)]
    final = [group_width(iterative, g) for g in iterative.groups]
    assert final == [group_width(one_shot, g) for g in one_shot.groups] == [8, 16]


def test_taylor_needs_batches_and_unknown_criteria_are_refused() -> None:
    net = net_of(candidate("mlp", prune=0.5))
    with pytest.raises(ValueError, match="taylor pruning needs batches"):
        prune_model(net, "taylor")
    with pytest.raises(ValueError, match="unknown prune criterion 'l2'"):
        prune_model(net, "l2")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "family",
    [
        "cnn",
        "mlp",
        "mbv2",
        "resnet",
    ],
)
def test_factorized_layers_cannot_be_pruned(family: str) -> None:
    """Pruning after factorization is refused with the fix: prune first."""
    net = net_of(candidate(family, prune=0.5, rank=0.25))
    factorize_model(net)
    factors = [
        m
        for m in net.modules()
        if isinstance(m, nn.Sequential) and all(isinstance(c, nn.Conv2d | nn.Linear) for c in m)
    ]
    assert factors, "rank 1/4 factorizes some layer of every family"
    with pytest.raises(TypeError, match="prune before factorizing"):
        prune_model(net, "l1")


def test_ratio_zero_and_stage_ratios_are_respected() -> None:
    cand = candidate("cnn").model_copy(
        update={"stages": (candidate("cnn", prune=0.25).stages[0], candidate("cnn").stages[1])}
    )
    net = net_of(cand)
    assert [g.name for g in net.groups] == ["stage0.block0.out"]  # ratio 0: no group
    prune_model(net, "l1")
    assert net.stages[0][0].conv.out_channels == keep_count(16, 0.25) == 8  # 12 -> multiple of 8
    assert net.stages[1][0].conv.out_channels == 32


def test_pruned_eval_model_stays_in_eval_mode() -> None:
    cand = candidate("resnet", prune=0.5)
    net = prune_model(net_of(cand), "l1")
    x = inputs(cand)
    with torch.no_grad():
        batched = net(x)
        single = net(x[:1])
    assert not any(m.training for m in net.modules())
    torch.testing.assert_close(batched[:1], single, atol=1e-5, rtol=0)
