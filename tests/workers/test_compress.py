"""Compression passes: what a deployed model keeps, computes and weighs after each one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from torch import nn
from torch.nn.utils import parametrize

from search_spaces import Candidate, LayerChoice
from workers.compress import (
    attach_fake_quant,
    bake,
    factorize_layer,
    factorize_model,
    fake_quant,
    fold_batchnorm,
    keep_count,
    pack_levels,
    packed_size,
    prune_model,
    quantize_int,
    unpack_levels,
    write_packed,
)
from workers.models import ConvBlock, Net, build_model, count_params


def _layers(*widths: int) -> tuple[LayerChoice, ...]:
    return tuple(LayerChoice(width=w) for w in widths)


CNN = Candidate(
    space="cnn_small",
    family="cnn",
    input_shape=(1, 8, 8),
    num_classes=10,
    layers=_layers(16, 32),
)
MLP = Candidate(
    space="mlp_small",
    family="mlp",
    input_shape=(64,),
    num_classes=10,
    layers=_layers(128, 64),
)


def _net(cand: Candidate, seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return build_model(cand).eval()


def _x(cand: Candidate, batch: int = 4, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *cand.input_shape, generator=g)


def _randomize_bn(net: Net, seed: int = 2) -> None:
    """Non-trivial BN statistics and affine parameters, as after training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in net.blocks:
            bn = block.bn
            if isinstance(bn, nn.BatchNorm2d):
                n = bn.num_features
                bn.running_mean.copy_(torch.randn(n, generator=g))
                bn.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.1)
                bn.weight.copy_(torch.randn(n, generator=g))
                bn.bias.copy_(torch.randn(n, generator=g))


# --- structured pruning -------------------------------------------------------------------


@pytest.mark.parametrize("cand", [CNN, MLP], ids=["cnn", "mlp"])
def test_prune_half_keeps_exact_channel_counts(cand: Candidate) -> None:
    net = _net(cand)
    _randomize_bn(net)
    dense_params = count_params(net)
    prune_model(net, [0.5, 0.5])
    widths = [layer.width for layer in cand.layers]
    kept = [keep_count(w, 0.5) for w in widths]
    assert kept == [w // 2 for w in widths]
    for block, k in zip(net.blocks, kept, strict=True):
        assert block.layer.weight.shape[0] == k
        if isinstance(block, ConvBlock):
            assert block.bn.num_features == k
            assert block.bn.running_mean.shape == (k,)
            assert block.bn.running_var.shape == (k,)
    # consumers lose the matching inputs
    assert net.blocks[1].layer.weight.shape[1] == kept[0]
    assert net.head.in_features == kept[1]
    assert net.head.out_features == cand.num_classes
    assert count_params(net) < dense_params
    with torch.no_grad():
        out = net(_x(cand))
    assert out.shape == (4, cand.num_classes)
    assert torch.isfinite(out).all()


def test_prune_keeps_highest_l1_channels_and_slices_consumers_and_bn() -> None:
    net = _net(CNN)
    _randomize_bn(net)
    order = torch.randperm(16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        w0 = net.blocks[0].layer.weight  # (16, 1, 3, 3)
        w0.copy_(torch.ones_like(w0) * (order.float() + 1)[:, None, None, None])
    # channel c has L1 norm 9 * (order[c] + 1): the 8 largest are those with order >= 8
    expected = torch.nonzero(order >= 8).flatten()  # in channel order
    before = {
        "w0": net.blocks[0].layer.weight.detach().clone(),
        "w1": net.blocks[1].layer.weight.detach().clone(),
        "mean": net.blocks[0].bn.running_mean.clone(),
        "var": net.blocks[0].bn.running_var.clone(),
        "gamma": net.blocks[0].bn.weight.detach().clone(),
        "beta": net.blocks[0].bn.bias.detach().clone(),
    }
    prune_model(net, [0.5, 0.0])
    torch.testing.assert_close(net.blocks[0].layer.weight, before["w0"][expected])
    torch.testing.assert_close(net.blocks[1].layer.weight, before["w1"][:, expected])
    bn = net.blocks[0].bn
    torch.testing.assert_close(bn.running_mean, before["mean"][expected])
    torch.testing.assert_close(bn.running_var, before["var"][expected])
    torch.testing.assert_close(bn.weight.detach(), before["gamma"][expected])
    torch.testing.assert_close(bn.bias.detach(), before["beta"][expected])
    assert net.blocks[1].layer.weight.shape[0] == 32  # ratio 0 leaves block 1 alone


def test_prune_dead_mlp_channels_keeps_outputs() -> None:
    """Channels with all-zero weights and bias are the lowest-L1 ones; removing them is exact."""
    net = _net(MLP)
    dead0, dead1 = torch.arange(0, 128, 2), torch.arange(1, 64, 2)
    with torch.no_grad():
        net.blocks[0].layer.weight[dead0] = 0
        net.blocks[0].layer.bias[dead0] = 0
        net.blocks[1].layer.weight[dead1] = 0
        net.blocks[1].layer.bias[dead1] = 0
    x = _x(MLP)
    with torch.no_grad():
        ref = net(x)
        prune_model(net, [0.5, 0.5])
        out = net(x)
    assert net.blocks[0].layer.out_features == 64 and net.head.in_features == 32
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_prune_rejects_wrong_ratio_count_and_factorized_layers() -> None:
    net = _net(MLP)
    with pytest.raises(ValueError, match="1 prune ratios for 2 blocks"):
        prune_model(net, [0.5])
    factorize_model(net, [0.25, 1.0])
    with pytest.raises(TypeError, match="prune before factorizing"):
        prune_model(net, [0.5, 0.0])


def test_pruned_eval_model_stays_in_eval_mode() -> None:
    net = _net(CNN)
    _randomize_bn(net)
    prune_model(net, [0.5, 0.5])
    x = _x(CNN)
    with torch.no_grad():
        batched = net(x)
        single = net(x[:1])
    assert not any(m.training for m in net.modules())
    torch.testing.assert_close(batched[:1], single, atol=1e-5, rtol=0)


# --- BatchNorm folding --------------------------------------------------------------------


def test_fold_batchnorm_reproduces_eval_outputs() -> None:
    net = _net(CNN)
    _randomize_bn(net)
    x = _x(CNN, batch=8)
    with torch.no_grad():
        ref = net(x)
        fold_batchnorm(net)
        out = net.eval()(x)
    assert all(isinstance(b.bn, nn.Identity) for b in net.blocks)
    assert all(b.layer.bias is not None for b in net.blocks)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_fold_after_prune_reproduces_pruned_outputs() -> None:
    net = _net(CNN)
    _randomize_bn(net)
    prune_model(net, [0.5, 0.25])
    net.eval()
    x = _x(CNN)
    with torch.no_grad():
        ref = net(x)
        out = fold_batchnorm(net)(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_fold_is_a_no_op_on_mlps() -> None:
    net = _net(MLP)
    x = _x(MLP)
    with torch.no_grad():
        ref = net(x)
        out = fold_batchnorm(net)(x)
    torch.testing.assert_close(out, ref, atol=0, rtol=0)


# --- low-rank factorization ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (nn.Linear(48, 24), (5, 48)),
        (nn.Linear(24, 48), (5, 24)),
        (nn.Conv2d(6, 10, 3, padding=1), (2, 6, 8, 8)),
        (nn.Conv2d(6, 10, 3, padding=1, bias=False), (2, 6, 8, 8)),
        (nn.Conv2d(12, 8, 1), (2, 12, 5, 5)),
        (nn.Conv2d(4, 16, 1), (2, 4, 5, 5)),
    ],
    ids=["linear-wide-in", "linear-wide-out", "conv3x3", "conv3x3-nobias", "conv1x1", "conv1x1-up"],
)
def test_factorize_layer_at_full_rank_is_exact(layer: nn.Module, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    layer.reset_parameters()  # type: ignore[operator]
    w = layer.weight
    full = min(w.shape[0], w[0].numel())
    x = torch.randn(*shape)
    split = factorize_layer(layer, full)
    assert isinstance(split, nn.Sequential) and len(split) == 2
    with torch.no_grad():
        torch.testing.assert_close(split(x), layer(x), atol=1e-4, rtol=0)


def test_factorize_quarter_rank_halves_a_square_linear() -> None:
    """rank 1/4 of 256 is r = 64.

    dense: 256 * 256 weights + 256 bias = 65,792 params.
    split: Linear(256 -> 64, no bias) + Linear(64 -> 256): 256*64 + 64*256 + 256 = 33,024,
    so 65,792 / 33,024 = 1.99x fewer (in general out*in / (r * (out + in)) = 1 / (2 * 1/4)).
    """
    dense = nn.Linear(256, 256)
    split = factorize_layer(dense, 256 // 4)
    assert count_params(dense) == 65_792
    assert count_params(split) == 33_024
    assert count_params(dense) / count_params(split) >= 1.9
    assert split[0].weight.shape == (64, 256) and split[1].weight.shape == (256, 64)


def test_factorize_low_rank_matrix_is_exact() -> None:
    g = torch.Generator().manual_seed(0)
    layer = nn.Linear(32, 32)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(32, 4, generator=g) @ torch.randn(4, 32, generator=g))
    x = torch.randn(3, 32, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(factorize_layer(layer, 4)(x), layer(x), atol=1e-4, rtol=0)


def test_factorize_model_only_splits_when_it_saves_params() -> None:
    cand = Candidate(
        space="mlp_small",
        family="mlp",
        input_shape=(64,),
        num_classes=10,
        layers=_layers(256, 256, 64, 64),
    )
    net = _net(cand)
    before = [count_params(b) for b in net.blocks]
    # 64->256 at 1/4: r=16, 16 * (256 + 64) = 5,120 < 16,384 weights: split.
    # 256->256 at 1/4: r=64, 64 * 512 = 32,768 < 65,536: split.
    # 256->64 at 1.0: always dense.
    # 64->64 at 3/4: r=48, 48 * (64 + 64) = 6,144 > 4,096: a split would grow it, stays dense.
    factorize_model(net, [0.25, 0.25, 1.0, 0.75])
    kinds = [type(b.layer) for b in net.blocks]
    assert kinds == [nn.Sequential, nn.Sequential, nn.Linear, nn.Linear]
    after = [count_params(b) for b in net.blocks]
    assert after[0] < before[0] and after[1] < before[1]
    assert after[2:] == before[2:]
    with torch.no_grad():
        assert net(_x(cand)).shape == (4, 10)
    with pytest.raises(ValueError, match="2 rank fractions for 4 blocks"):
        factorize_model(net, [0.5, 0.5])


def test_factorize_model_on_cnn_keeps_output_shape() -> None:
    net = _net(CNN)
    dense = count_params(net)
    factorize_model(net, [1.0, 0.25])
    assert isinstance(net.blocks[0].layer, nn.Conv2d)
    first, second = net.blocks[1].layer
    assert first.kernel_size == (3, 3) and second.kernel_size == (1, 1)
    assert count_params(net) < dense
    with torch.no_grad():
        assert net(_x(CNN)).shape == (4, 10)


# --- quantization -------------------------------------------------------------------------


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
    assert fake_quant(w, bits).flatten(1).unique(dim=None).numel() <= w.shape[0] * (2 * qmax + 1)


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


def test_qat_gradients_flow_and_bake_keeps_quantized_weights() -> None:
    net = _net(MLP)
    attach_fake_quant(net, [4, 32], head_bits=8)
    l0, l1, head = net.blocks[0].layer, net.blocks[1].layer, net.head
    assert parametrize.is_parametrized(l0, "weight")
    assert not parametrize.is_parametrized(l1, "weight")  # 32 bits stays float
    assert parametrize.is_parametrized(head, "weight")

    net.train()
    x, y = _x(MLP, batch=16), torch.arange(16) % 10
    loss = nn.functional.cross_entropy(net(x), y)
    loss.backward()
    for layer in (l0, head):
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
        torch.testing.assert_close(net(x), ref, atol=1e-6, rtol=0)
    assert (l0.weight.detach().flatten(1).unique().numel()) <= 128 * 15


def test_fake_quant_on_factorized_layers_shares_block_bits() -> None:
    net = _net(MLP)
    factorize_model(net, [0.25, 1.0])
    attach_fake_quant(net, [2, 32], head_bits=32)
    first, second = net.blocks[0].layer
    assert parametrize.is_parametrized(first, "weight")
    assert parametrize.is_parametrized(second, "weight")
    bake(net)
    for layer in (first, second):
        q, _ = quantize_int(layer.weight.detach(), 2)
        torch.testing.assert_close(layer.weight.detach(), fake_quant(layer.weight.detach(), 2))
        assert set(q.unique().tolist()) <= {-1, 0, 1}


# --- packing ------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("count", [1, 3, 7, 13, 101])
def test_pack_unpack_round_trip(bits: int, count: int) -> None:
    rng = np.random.default_rng(count)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    q = rng.integers(lo, hi + 1, size=count).astype(np.int32)
    q[0] = lo
    packed = pack_levels(q, bits)
    assert packed.dtype == np.uint8
    assert len(packed) == -(-count * bits // 8)
    np.testing.assert_array_equal(unpack_levels(packed, bits, count), q)


def test_pack_levels_of_a_matrix_flattens_it() -> None:
    q = np.arange(-7, 8, dtype=np.int32).reshape(3, 5)
    packed = pack_levels(q, 4)
    assert len(packed) == 8
    np.testing.assert_array_equal(unpack_levels(packed, 4, q.size).reshape(3, 5), q)


def _payload(path: Path) -> tuple[int, dict[str, np.ndarray]]:
    arrays = load_file(str(path))
    return sum(int(a.nbytes) for a in arrays.values()), arrays


def test_write_packed_reports_the_stored_bytes(tmp_path: Path) -> None:
    net = _net(CNN)
    fold_batchnorm(net)
    factorize_model(net, [1.0, 0.25])
    bits, head_bits = [4, 2], 8
    path = tmp_path / "w.safetensors"
    size = write_packed(path, net, bits, head_bits)
    payload, arrays = _payload(path)
    assert size == payload == packed_size(net, bits, head_bits)
    assert path.stat().st_size > size  # plus the JSON header
    assert "blocks.0.layer.weight.packed" in arrays
    assert arrays["blocks.0.layer.weight.scale"].dtype == np.float32
    assert "blocks.1.layer.0.weight.packed" in arrays and "blocks.1.layer.1.weight.packed" in arrays
    assert "head.weight.packed" in arrays and arrays["head.bias"].dtype == np.float32
    # the stored levels dequantize to the baked weights
    net2 = _net(CNN)
    fold_batchnorm(net2)
    w = net2.blocks[0].layer.weight.detach()
    q = unpack_levels(arrays["blocks.0.layer.weight.packed"], 4, w.numel()).reshape(w.shape)
    deq = q * arrays["blocks.0.layer.weight.scale"][:, None, None, None]
    np.testing.assert_allclose(deq, fake_quant(w, 4).numpy(), atol=1e-6)


def test_four_bit_weights_are_an_eighth_of_float32(tmp_path: Path) -> None:
    net = _net(MLP)
    f32 = write_packed(tmp_path / "f32.safetensors", net, [32, 32], 32)
    f16 = write_packed(tmp_path / "f16.safetensors", net, [16, 16], 16)
    q4 = write_packed(tmp_path / "q4.safetensors", net, [4, 4], 4)
    _, a32 = _payload(tmp_path / "f32.safetensors")
    _, a4 = _payload(tmp_path / "q4.safetensors")
    assert f32 == 4 * count_params(net)
    w32 = sum(a.nbytes for k, a in a32.items() if k.endswith(".weight"))
    w4 = sum(a.nbytes for k, a in a4.items() if k.endswith(".weight.packed"))
    assert w32 == 4 * (64 * 128 + 128 * 64 + 64 * 10)
    assert w4 == w32 // 8
    assert q4 < f16 < f32
    assert q4 < f32 / 5  # scales and float biases included


def test_packed_size_tracks_pruning() -> None:
    dense = _net(MLP)
    pruned = prune_model(_net(MLP), [0.5, 0.5])
    assert packed_size(pruned, [8, 8], 8) < packed_size(dense, [8, 8], 8)
