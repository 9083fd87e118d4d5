"""Low-rank factorization: exact at full rank, smaller at low rank, ranks chosen as asked."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from search_spaces import Candidate, Stage
from tests.workers.factories import candidate, inputs, net_of
from workers.compress import (
    energy_rank,
    factorize_layer,
    factorize_model,
    full_rank,
    rank_for,
    tucker2_conv,
)
from workers.models import LayerSpec, count_params, spec_of


def _seeded(layer: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layer.reset_parameters()  # type: ignore[operator]
    return layer


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (nn.Linear(48, 24), (5, 48)),
        (nn.Linear(24, 48), (5, 24)),
        (nn.Conv2d(6, 10, 3, padding=1), (2, 6, 8, 8)),
        (nn.Conv2d(6, 10, 3, padding=1, bias=False), (2, 6, 8, 8)),
        (nn.Conv2d(6, 10, 3, stride=2, padding=1), (2, 6, 9, 9)),
        (nn.Conv2d(12, 8, 1), (2, 12, 5, 5)),
        (nn.Conv2d(4, 16, 1), (2, 4, 5, 5)),
    ],
    ids=[
        "linear-wide-in",
        "linear-wide-out",
        "conv3x3",
        "conv3x3-nobias",
        "conv3x3-stride2",
        "conv1x1",
        "conv1x1-up",
    ],
)
def test_svd_at_full_rank_is_exact(layer: nn.Module, shape: tuple[int, ...]) -> None:
    _seeded(layer)
    x = torch.randn(*shape)
    split = factorize_layer(layer, full_rank(layer))  # type: ignore[arg-type]
    assert isinstance(split, nn.Sequential) and len(split) == 2
    with torch.no_grad():
        torch.testing.assert_close(split(x), layer(x), atol=1e-4, rtol=0)


def test_svd_quarter_rank_halves_a_square_linear() -> None:
    """rank 1/4 of 256 is r = 64.

    dense: 256 * 256 weights + 256 bias = 65,792 params.
    split: Linear(256 -> 64, no bias) + Linear(64 -> 256): 256*64 + 64*256 + 256 = 33,024,
    so 65,792 / 33,024 = 1.99x fewer (in general out*in / (r * (out + in)) = 1 / (2 * 1/4)).
    """
    dense = nn.Linear(256, 256)
    r = rank_for(dense, 0.25)
    assert r == 64
    split = factorize_layer(dense, r)
    assert count_params(dense) == 65_792
    assert count_params(split) == 33_024
    assert count_params(dense) / count_params(split) >= 1.9
    assert split[0].weight.shape == (64, 256) and split[1].weight.shape == (256, 64)
    assert split[0].bias is None


def test_svd_of_a_low_rank_matrix_is_exact() -> None:
    g = torch.Generator().manual_seed(0)
    layer = nn.Linear(32, 32)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(32, 4, generator=g) @ torch.randn(4, 32, generator=g))
    x = torch.randn(3, 32, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(factorize_layer(layer, 4)(x), layer(x), atol=1e-4, rtol=0)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("stride", [1, 2])
def test_tucker2_at_full_rank_reproduces_a_3x3_conv(bias: bool, stride: int) -> None:
    conv = _seeded(nn.Conv2d(12, 20, 3, stride=stride, padding=1, bias=bias))
    assert isinstance(conv, nn.Conv2d)
    x = torch.randn(2, 12, 9, 9, generator=torch.Generator().manual_seed(1))
    split = tucker2_conv(conv, 12, 20)
    first, core, last = split
    assert (first.kernel_size, core.kernel_size, last.kernel_size) == ((1, 1), (3, 3), (1, 1))
    assert core.stride == (stride, stride)
    with torch.no_grad():
        torch.testing.assert_close(split(x), conv(x), atol=1e-4, rtol=0)


def test_tucker2_quarter_rank_of_a_64_channel_3x3_conv() -> None:
    """r_in = r_out = 64 / 4 = 16.

    dense: 64 * 64 * 3 * 3 = 36,864 weights (no bias, as in the models).
    Tucker-2: 1x1 64 -> 16 (1,024) + 3x3 16 -> 16 (2,304) + 1x1 16 -> 64 (1,024) = 4,352,
    8.5x fewer. (An SVD split at rank 16 would keep 16 * (576 + 64) = 10,240: 3.6x.)
    """
    conv = _seeded(nn.Conv2d(64, 64, 3, padding=1, bias=False))
    split = tucker2_conv(conv, 16, 16)  # type: ignore[arg-type]
    assert count_params(conv) == 36_864
    assert count_params(split) == 4_352
    assert count_params(conv) / count_params(split) >= 3.5
    x = torch.randn(1, 64, 6, 6)
    with torch.no_grad():
        assert split(x).shape == conv(x).shape


def test_tucker2_error_shrinks_as_rank_grows() -> None:
    conv = _seeded(nn.Conv2d(16, 16, 3, padding=1, bias=False))
    assert isinstance(conv, nn.Conv2d)
    x = torch.randn(4, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = conv(x)
        errs = [float((tucker2_conv(conv, r, r)(x) - ref).norm()) for r in (2, 4, 8, 16)]
    assert errs == sorted(errs, reverse=True)
    assert errs[-1] < 1e-3 * float(ref.norm())


def _known_spectrum(singular: list[float], n: int = 16) -> torch.Tensor:
    """An n x n matrix whose singular values are exactly ``singular`` (zeros after)."""
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    s = torch.zeros(n, dtype=torch.float64)
    s[: len(singular)] = torch.tensor(singular, dtype=torch.float64)
    return (u * s) @ v.T


# s = 8, 4, 2, 1, 0.5: s^2 = 64, 16, 4, 1, 0.25 of 85.25; kept energy by rank:
# r=1 75.07 %, r=2 93.84 %, r=3 98.53 %, r=4 99.71 %, r=5 100 %.
SPECTRUM = [8.0, 4.0, 2.0, 1.0, 0.5]


@pytest.mark.parametrize(
    ("energy", "rank"), [(0.5, 1), (0.75, 1), (0.9, 2), (0.95, 3), (0.99, 4), (0.999, 5)]
)
def test_energy_rank_picks_the_known_rank(energy: float, rank: int) -> None:
    s = torch.linalg.svdvals(_known_spectrum(SPECTRUM).float())
    assert energy_rank(s, energy) == rank


def test_energy_rank_never_exceeds_the_full_rank() -> None:
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        s = torch.sort(torch.rand(64, generator=g), descending=True).values
        assert energy_rank(s, 1.0) <= 64, seed


def test_factorize_model_with_energy_uses_the_spectrum() -> None:
    cand = Candidate(
        space="test",
        family="mlp",
        input_shape=(64,),
        num_classes=10,
        stages=(Stage(width=64, rank=0.5), Stage(width=16)),
    )
    net = net_of(cand)
    with torch.no_grad():
        net.stages[0][0].fc.weight.copy_(_known_spectrum(SPECTRUM, n=64))
    x = inputs(cand)
    with torch.no_grad():
        ref = net(x)
    factorize_model(net, energy=0.95)
    first, second = net.stages[0][0].fc
    # the energy rank is 3 (not 0.5 * 64 = 32), rounded up to the channel multiple
    assert first.out_features == second.in_features == 8
    assert isinstance(net.stages[1][0].fc, nn.Linear)  # rank 1.0: energy does not apply
    with torch.no_grad():  # dropping 1.47 % of the energy moves the logits only a little
        assert float((net(x) - ref).norm()) < 0.2 * float(ref.norm())


def test_factorize_model_only_splits_when_it_saves_params() -> None:
    cand = Candidate(
        space="test",
        family="mlp",
        input_shape=(64,),
        num_classes=10,
        stages=(
            Stage(width=256, rank=0.25),
            Stage(width=256, rank=0.25),
            Stage(width=64, rank=1.0),
            Stage(width=64, rank=0.75),
        ),
    )
    net = net_of(cand)
    blocks = [stage[0] for stage in net.stages]
    before = [count_params(b) for b in blocks]
    # 64->256 at 1/4: r=16, 16 * (256 + 64) = 5,120 < 16,384 weights: split.
    # 256->256 at 1/4: r=64, 64 * 512 = 32,768 < 65,536: split.
    # 256->64 at 1.0: always dense.
    # 64->64 at 3/4: r=48, 48 * (64 + 64) = 6,144 > 4,096: a split would grow it, stays dense.
    factorize_model(net)
    blocks = [stage[0] for stage in net.stages]
    assert [type(b.fc) for b in blocks] == [nn.Sequential, nn.Sequential, nn.Linear, nn.Linear]
    after = [count_params(b) for b in blocks]
    assert after[0] < before[0] and after[1] < before[1]
    assert after[2:] == before[2:]
    assert [f.out_features for f in (blocks[0].fc[0], blocks[1].fc[0])] == [16, 64]
    with torch.no_grad():
        assert net(inputs(cand)).shape == (4, 10)


@pytest.mark.parametrize(("method", "factors"), [("tucker2", 3), ("svd", 2)])
def test_factorize_model_on_cnn_splits_kxk_convs_and_keeps_their_bits(
    method: str, factors: int
) -> None:
    cand = candidate("cnn", rank=0.25, wbits=4, abits=8)
    cand = cand.model_copy(
        update={"stages": (cand.stages[0].model_copy(update={"rank": 1.0}), cand.stages[1])}
    )
    net = net_of(cand)
    dense = count_params(net)
    factorize_model(net, conv_method=method)  # type: ignore[arg-type]
    assert isinstance(net.stages[0][0].conv, nn.Conv2d)  # rank 1.0 stays dense
    split = net.stages[1][0].conv
    assert isinstance(split, nn.Sequential) and len(split) == factors
    assert [c.kernel_size for c in split][-1] == (1, 1)
    assert sum(c.kernel_size == (3, 3) for c in split) == 1
    assert all(spec_of(c) == LayerSpec(wbits=4, abits=8, rank=0.25) for c in split)
    assert count_params(net) < dense
    with torch.no_grad():
        assert net(inputs(cand)).shape == (4, 10)


def test_depthwise_convs_are_never_factorized() -> None:
    cand = candidate("mbv2", rank=0.25)
    net = net_of(cand)
    factorize_model(net)
    for stage in net.stages:
        for blk in stage:
            assert isinstance(blk.dw.conv, nn.Conv2d) and blk.dw.conv.groups > 1
    with torch.no_grad():
        assert net(inputs(cand)).shape == (4, 10)
