"""The builder: every family runs, and carries the annotations compression passes rely on."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from search_spaces import FAMILIES, Candidate, Compression, Stage
from tests.workers.factories import candidate, inputs
from workers.models import LayerSpec, build_model, count_params, spec_of, weight_layers


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_builds_runs_and_is_reproducible(family: str) -> None:
    cand = candidate(family)
    net, again = build_model(cand).eval(), build_model(cand).eval()
    x = inputs(cand)
    with torch.no_grad():
        out = net(x)
        torch.testing.assert_close(again(x), out, atol=0, rtol=0)  # seeded initialisation
    assert out.shape == (4, 10)
    assert net.family == family
    assert len(net.stages) == len(cand.stages)
    assert net.head.out_features == 10


@pytest.mark.parametrize("family", FAMILIES)
def test_every_layer_carries_its_stage_bits_and_rank(family: str) -> None:
    cand = candidate(family, wbits=4, abits=8, rank=0.5, head_wbits=16, head_abits=16)
    net = build_model(cand)
    layers = weight_layers(net)
    assert layers and all(isinstance(getattr(m, "hw", None), LayerSpec) for _, m in layers)
    for name, m in layers:
        edge = name.startswith(("stem", "head"))
        expected = LayerSpec(16, 16, 1.0) if edge else LayerSpec(4, 8, 0.5)
        assert spec_of(m) == expected, name


def test_per_block_compression_reaches_each_block() -> None:
    blocks = (Compression(wbits=2, prune=0.5), Compression(wbits=8, abits=8, rank=0.25))
    cand = Candidate(
        space="test",
        family="resnet",
        input_shape=(1, 12, 12),
        num_classes=10,
        stem_width=8,
        stages=(Stage(depth=2, width=8, wbits=16, blocks=blocks),),
    )
    net = build_model(cand)
    first, second = net.stages[0]
    assert spec_of(first.c1.conv) == spec_of(first.c2.conv) == LayerSpec(2, 32, 1.0)
    assert spec_of(second.c1.conv) == LayerSpec(8, 8, 0.25)
    # only block 0 prunes: its inner channels and the stem's stream (ratio of stage 0 block 0)
    assert sorted((g.name, g.ratio) for g in net.groups) == [
        ("stage0.block0.inner", 0.5),
        ("stream.stem", 0.5),
    ]


@pytest.mark.parametrize("family", FAMILIES)
def test_groups_and_conv_bn_pairs_point_at_real_modules(family: str) -> None:
    net = build_model(candidate(family, prune=0.25))
    assert net.groups and all(g.ratio == 0.25 for g in net.groups)
    for g in net.groups:
        assert any(m.role != "in" for m in g.members), g.name  # a producer to score
        for m in g.members:
            assert isinstance(net.get_submodule(m.path), nn.Conv2d | nn.Linear | nn.BatchNorm2d)
    for conv_path, bn_path in net.conv_bn:
        conv, bn = net.get_submodule(conv_path), net.get_submodule(bn_path)
        assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
        assert conv.out_channels == bn.num_features
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert len(net.conv_bn) == n_bn  # every BN is foldable
    assert build_model(candidate(family)).groups == []  # prune 0: nothing to prune


def test_mbv2_without_expansion_has_no_hidden_group_and_keeps_residuals() -> None:
    cand = Candidate(
        space="test",
        family="mbv2",
        input_shape=(1, 12, 12),
        num_classes=10,
        stem_width=8,
        stages=(Stage(depth=2, width=8, expand=1, prune=0.5), Stage(width=16, expand=4)),
    )
    net = build_model(cand)
    assert net.groups == []  # expand 1: no hidden channels; expand 4 stage: prune 0
    first, second = net.stages[0]
    assert isinstance(first.expand, nn.Identity) and first.residual and second.residual
    assert not net.stages[1][0].residual  # 8 -> 16 channels
    assert count_params(net) > 0
