"""Compressed widths land on multiples of 8, so workloads repeat and kernels vectorize."""

from __future__ import annotations

import pytest
import torch

from search_spaces import Candidate, Stage
from tests.workers.factories import net_of
from workers.compress import factorize_model, keep_count, prune_model
from workers.compress.lowrank import rank_for
from workers.compress.rounding import CHANNEL_MULTIPLE, round_channels
from workers.models import weight_layers


@pytest.mark.parametrize(
    ("n", "full", "want"),
    [(12, 16, 8), (13, 16, 16), (20, 32, 16), (21, 32, 24), (3, 32, 8), (31, 32, 32), (24, 24, 24)],
)
def test_rounds_to_the_nearest_multiple_ties_down(n: int, full: int, want: int) -> None:
    assert round_channels(n, full) == want


def test_never_above_the_layer_and_narrow_layers_unchanged() -> None:
    assert round_channels(19, 20) == 16 and round_channels(20, 20) == 20
    assert round_channels(13, 14) == 14  # 16 capped at the layer's 14
    assert round_channels(3, 8) == 3 and round_channels(5, 6) == 5  # nothing to round to
    assert round_channels(9, 64, up=True) == 16 and round_channels(16, 64, up=True) == 16


def test_bad_width_names_the_value() -> None:
    with pytest.raises(ValueError, match="width 0 is outside 1..16"):
        round_channels(0, 16)


def test_keep_count_and_rank_are_multiples() -> None:
    assert keep_count(64, 0.0) == 64
    for width in (16, 24, 32, 48, 64, 96, 128):
        for ratio in (0.25, 0.5, 0.75):
            assert keep_count(width, ratio) % CHANNEL_MULTIPLE == 0, (width, ratio)
    assert rank_for(torch.nn.Linear(100, 40), 0.25) == 8  # 10 -> 8


def test_compressed_network_has_only_rounded_widths() -> None:
    cand = Candidate(
        space="test",
        family="cnn",
        input_shape=(1, 28, 28),
        num_classes=10,
        stages=(
            Stage(width=48, stride=2, prune=0.25, rank=0.5),  # 36 kept -> 32
            Stage(width=96, stride=2, prune=0.5, rank=0.25),
        ),
    )
    net = prune_model(net_of(cand), "l1")
    factorize_model(net)
    widths = {
        int(n)
        for name, m in weight_layers(net)
        if not name.startswith("head")
        for n in (
            (m.in_channels, m.out_channels) if isinstance(m, torch.nn.Conv2d) else (m.in_features,)
        )
        if n > 1  # the image's one input channel
    }
    assert widths and all(w % CHANNEL_MULTIPLE == 0 for w in widths), sorted(widths)
    with torch.no_grad():
        assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
