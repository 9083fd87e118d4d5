"""Quantization: weight grids, activation observers, PTQ and QAT (QDQ export: test_qdq_export)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from search_spaces import FAMILIES, Candidate, Stage
from tests.workers.factories import candidate, inputs, labels, net_of
from workers.compress import (
    OBSERVERS,
    ActQuant,
    attach_act_quant,
    attach_fake_quant,
    bake,
    calibrate,
    factorize_model,
    fake_quant,
    fold_batchnorm,
    quantize_int,
    quantize_weights,
    without_act_quant,
)
from workers.compress.quantize import QuantInput, channel_scales
from workers.models import Net, spec_of, weight_layers

# --- weights ------------------------------------------------------------------------------


def _weights(shape: tuple[int, ...] = (16, 32), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(*shape, generator=g)
    w[0].mul_(100)  # one channel with a far larger range: scales must be per channel
    return w


def test_fake_quant_8_bit_levels_and_error() -> None:
    w = _weights((16, 3, 3, 3))
    fq = fake_quant(w, 8)
    q, scale = quantize_int(w, 8)
    assert scale.shape == (16,)
    torch.testing.assert_close(scale, w.abs().flatten(1).amax(1) / 127)
    for c in range(w.shape[0]):
        assert fq[c].unique().numel() <= 255
        err = (fq[c] - w[c]).abs().max()
        assert err <= scale[c] / 2 + 1e-6 * scale[c] * 127
    torch.testing.assert_close(fq, q.float() * scale[:, None, None, None])


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quantize_int_stays_in_range(bits: int) -> None:
    w = _weights()
    q, scale = quantize_int(w, bits)
    qmax = 2 ** (bits - 1) - 1
    assert q.dtype == torch.int32
    assert int(q.min()) >= -qmax and int(q.max()) <= qmax
    assert int(q.abs().amax(dim=1).min()) == qmax  # every channel's max uses the top level
    assert (scale > 0).all()
    for c in range(w.shape[0]):
        assert fake_quant(w, bits)[c].unique().numel() <= 2 * qmax + 1


def test_fake_quant_16_and_32_bits() -> None:
    w = _weights()
    assert fake_quant(w, 32) is w
    fq16 = fake_quant(w, 16)
    assert fq16.dtype == torch.float32
    torch.testing.assert_close(fq16, w.half().float(), atol=0, rtol=0)


def test_zero_channel_quantizes_to_zero() -> None:
    w = _weights()
    w[3] = 0
    assert (fake_quant(w, 4)[3] == 0).all()
    assert torch.isfinite(fake_quant(w, 4)).all()


def test_mse_weight_scales_clip_outliers_and_lower_the_error() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 256, generator=g)
    w[:, 0] = 20.0  # one outlier per channel
    minmax, mse = channel_scales(w, 4, "minmax"), channel_scales(w, 4, "mse")
    assert (mse < minmax).all()

    def err(observer: str) -> float:
        return float(((fake_quant(w, 4, observer) - w) ** 2).sum())

    assert err("mse") < err("minmax")


# --- activation observers -----------------------------------------------------------------


def _observed(observer: str, data: list[torch.Tensor]) -> ActQuant:
    q = ActQuant(8, observer)  # type: ignore[arg-type]
    q.calibrating = True
    for x in data:
        q(x)
    q.finalize()
    return q


def _outlier_data() -> list[torch.Tensor]:
    """40,960 values ~ N(0.5, 1) and a single 100: the 99.99th percentile ignores the 100."""
    g = torch.Generator().manual_seed(0)
    data = [torch.randn(8192, generator=g) + 0.5 for _ in range(5)]
    data[2][17] = 100.0
    return data


def _range(q: ActQuant) -> float:
    return q.scale * q.levels


def _mse(q: ActQuant, v: torch.Tensor) -> float:
    return float(((q(v) - v) ** 2).mean())


def test_percentile_ignores_an_outlier_that_minmax_spans() -> None:
    data = _outlier_data()
    minmax, pct = _observed("minmax", data), _observed("percentile", data)
    assert _range(minmax) >= 100
    assert _range(pct) < 0.1 * _range(minmax)


@pytest.mark.parametrize("dist", ["outlier", "student-t"])
def test_mse_range_is_no_wider_and_no_worse_than_minmax(dist: str) -> None:
    if dist == "outlier":
        data = _outlier_data()
    else:  # heavy tails: clipping the far tail costs less than coarser steps everywhere
        torch.manual_seed(0)
        data = [torch.distributions.StudentT(2.0).sample((8192,)) for _ in range(5)]
    v = torch.cat(data)
    minmax, mse = _observed("minmax", data), _observed("mse", data)
    assert _range(mse) <= _range(minmax)
    assert _mse(mse, v) <= _mse(minmax, v)
    if dist == "student-t":
        assert _range(mse) < 0.95 * _range(minmax)
        assert _mse(mse, v) < 0.95 * _mse(minmax, v)


def test_minmax_range_covers_every_calibration_value() -> None:
    x = torch.rand(32, 8, 12, 12, generator=torch.Generator().manual_seed(0))
    x[..., 11] += 1.0  # e.g. a border column that is larger than the rest
    q = _observed("minmax", [x])
    hi = (q.levels - q.zero_point) * q.scale
    assert hi >= float(x.max()) * (1 - 1e-6)


@pytest.mark.parametrize("observer", OBSERVERS)
def test_observer_range_includes_zero_exactly(observer: str) -> None:
    positive = [torch.rand(4096, generator=torch.Generator().manual_seed(0)) + 1.0]
    q = _observed(observer, positive)
    assert q.zero_point == 0  # lo clamps to 0: ReLU outputs waste no levels below zero
    assert float(q(torch.zeros(3)).abs().max()) == 0.0


def test_act_quant_needs_calibration_data_and_known_observers() -> None:
    q = ActQuant(8)
    q.calibrating = True
    with pytest.raises(RuntimeError, match="saw no calibration data"):
        q.finalize()
    with pytest.raises(ValueError, match="unknown observer 'max'"):
        attach_act_quant(net_of(candidate("mlp", abits=8)), "max")  # type: ignore[arg-type]


# --- PTQ ----------------------------------------------------------------------------------


def _inputs_of(net: Net, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The tensor entering each QuantInput (before its ActQuant)."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        m.register_forward_pre_hook(lambda _m, args, n=name: seen.__setitem__(n, args[0]))
        for name, m in net.named_modules()
        if isinstance(m, QuantInput)
    ]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("family", FAMILIES)
def test_ptq_calibrates_every_quantizer_and_stays_close_to_float(family: str) -> None:
    cand = candidate(family, wbits=8, abits=8, head_wbits=8, head_abits=8)
    net = fold_batchnorm(net_of(cand))
    float_net = copy.deepcopy(net)
    quants = attach_act_quant(net, "minmax")
    assert len(quants) == len(weight_layers(net)) > 0  # every layer's input: abits 8
    calib = [inputs(cand, batch=32, seed=s) for s in (10, 11)]
    assert calibrate(net, calib) == len(quants)
    for q in quants:
        assert q.ready and not q.calibrating
        assert q.scale > 0
        assert 0 <= q.zero_point <= 255
    # inside the calibrated range, 8-bit fake-quant is within a scale of the float input
    for name, x in _inputs_of(net, calib[0]).items():
        aq = net.get_submodule(name).act
        lo, hi = -aq.zero_point * aq.scale, (aq.levels - aq.zero_point) * aq.scale
        inside = (x >= lo) & (x <= hi)
        assert inside.float().mean() > 0.99, name
        assert float((aq(x) - x)[inside].abs().max()) <= aq.scale * (1 + 1e-4), name
    quantize_weights(net)
    for _, layer in weight_layers(net):
        w = layer.weight.detach()
        torch.testing.assert_close(fake_quant(w, 8), w, atol=0, rtol=0)  # on the 8-bit grid
    x = inputs(cand, batch=16, seed=12)
    with torch.no_grad():
        ref, out = float_net(x), net(x)
    assert float((out - ref).norm()) < 0.2 * float(ref.norm())


def test_ptq_respects_per_stage_bits() -> None:
    cand = Candidate(
        space="test",
        family="mlp",
        input_shape=(64,),
        num_classes=10,
        stages=(Stage(width=32, wbits=4, abits=16), Stage(width=32, wbits=16), Stage(width=32)),
        head_wbits=8,
        head_abits=8,
    )
    net = net_of(cand)
    dense = {n: m.weight.detach().clone() for n, m in weight_layers(net)}
    quants = attach_act_quant(net)
    assert sorted(q.bits for q in quants) == [8, 16]  # stage 0 and the head
    calibrate(net, [inputs(cand, 32)])
    quantize_weights(net)
    layers = dict(weight_layers(net))
    w0 = layers["stages.0.0.fc.layer"].weight.detach()
    torch.testing.assert_close(w0, fake_quant(dense["stages.0.0.fc"], 4), atol=0, rtol=0)
    assert all(w0[c].unique().numel() <= 15 for c in range(w0.shape[0]))
    w1 = layers["stages.1.0.fc"].weight.detach()
    torch.testing.assert_close(w1, dense["stages.1.0.fc"].half().float(), atol=0, rtol=0)
    torch.testing.assert_close(layers["stages.2.0.fc"].weight.detach(), dense["stages.2.0.fc"])


def test_without_act_quant_is_the_float_graph_of_the_same_weights() -> None:
    cand = candidate("cnn", abits=8)
    net = net_of(cand)
    before = copy.deepcopy(net)
    attach_act_quant(net)
    calibrate(net, [inputs(cand, 32)])
    plain = without_act_quant(net)
    assert not any(isinstance(m, QuantInput | ActQuant) for m in plain.modules())
    assert any(isinstance(m, ActQuant) for m in net.modules())  # the original keeps them
    x = inputs(cand)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), before(x), atol=0, rtol=0)


# --- QAT ----------------------------------------------------------------------------------


def _qat_mlp() -> tuple[Candidate, Net]:
    cand = Candidate(
        space="test",
        family="mlp",
        input_shape=(64,),
        num_classes=10,
        stages=(Stage(width=128, wbits=4, abits=8), Stage(width=64, wbits=32)),
        head_wbits=8,
    )
    return cand, net_of(cand)


def test_qat_gradients_flow_and_bake_keeps_outputs_identical() -> None:
    cand, net = _qat_mlp()
    attach_act_quant(net)
    calibrate(net, [inputs(cand, 32)])
    attach_fake_quant(net)
    layers = dict(weight_layers(net))
    l0, l1, head = layers["stages.0.0.fc.layer"], layers["stages.1.0.fc"], layers["head"]
    assert parametrize.is_parametrized(l0, "weight")
    assert not parametrize.is_parametrized(l1, "weight")  # 32 bits stays float
    assert parametrize.is_parametrized(head, "weight")

    net.train()
    x, y = inputs(cand, batch=16), labels(16)
    nn.functional.cross_entropy(net(x), y).backward()
    for layer in (l0, head):  # straight through the weight and the activation quantizers
        grad = layer.parametrizations.weight.original.grad
        assert grad is not None and grad.abs().sum() > 0
    assert l1.weight.grad is not None and l1.weight.grad.abs().sum() > 0

    originals = {
        "l0": (l0.parametrizations.weight.original.detach().clone(), 4),
        "head": (head.parametrizations.weight.original.detach().clone(), 8),
    }
    l1_before = l1.weight.detach().clone()
    net.eval()
    with torch.no_grad():
        ref = net(x)
    bake(net)
    for layer in (l0, l1, head):
        assert not parametrize.is_parametrized(layer)
        assert isinstance(layer.weight, nn.Parameter)
    torch.testing.assert_close(l0.weight.detach(), fake_quant(*originals["l0"]), atol=0, rtol=0)
    torch.testing.assert_close(head.weight.detach(), fake_quant(*originals["head"]), atol=0, rtol=0)
    torch.testing.assert_close(l1.weight.detach(), l1_before, atol=0, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref, atol=0, rtol=0)


def test_fake_quant_on_factorized_layers_shares_the_block_bits() -> None:
    cand = candidate("mlp", wbits=2, rank=0.25)
    net = net_of(cand)
    factorize_model(net)
    attach_fake_quant(net)
    first, second = net.stages[0][0].fc
    assert spec_of(first).wbits == spec_of(second).wbits == 2
    assert parametrize.is_parametrized(first, "weight")
    assert parametrize.is_parametrized(second, "weight")
    bake(net)
    for layer in (first, second):
        w = layer.weight.detach()
        q, _ = quantize_int(w, 2)
        torch.testing.assert_close(w, fake_quant(w, 2))
        assert set(q.unique().tolist()) <= {-2, -1, 0, 1}  # the true 2-bit code
