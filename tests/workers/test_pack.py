"""Packed weights: the file a candidate's size is measured from, and what it stores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load_file

from search_spaces import Candidate, Stage
from tests.workers.factories import candidate, inputs, net_of
from workers.compress import (
    attach_act_quant,
    calibrate,
    factorize_model,
    fake_quant,
    fold_batchnorm,
    pack_levels,
    packed_size,
    prune_model,
    unpack_levels,
    write_packed,
)
from workers.models import Net, build_model, count_params


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
    """Bytes of the stored arrays (the file less its JSON header), and the arrays."""
    arrays = load_file(str(path))
    return sum(int(a.nbytes) for a in arrays.values()), arrays


def _header_bytes(path: Path) -> int:
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")  # u64 length + JSON


def test_write_packed_reports_the_bytes_on_disk(tmp_path: Path) -> None:
    cand = candidate("cnn", wbits=4, rank=0.25)
    cand = cand.model_copy(
        update={"stages": (cand.stages[0].model_copy(update={"rank": 1.0}), cand.stages[1])}
    )
    net = fold_batchnorm(factorize_model(net_of(cand)))
    path = tmp_path / "w.safetensors"
    size = write_packed(path, net)
    payload, arrays = _payload(path)
    assert size == path.stat().st_size == packed_size(net)
    assert size == payload + _header_bytes(path)
    assert "stages.0.0.conv.weight.packed" in arrays
    assert arrays["stages.0.0.conv.weight.scale"].dtype == np.float32
    split = [k for k in arrays if k.startswith("stages.1.0.conv.") and k.endswith(".packed")]
    assert len(split) == 3  # Tucker-2: three 4-bit factors
    assert arrays["head.weight"].dtype == np.float32  # head_wbits 32
    assert arrays["stages.0.0.conv.bias"].dtype == np.float32  # folded BN
    # the stored levels dequantize to the model's weights at 4 bits
    w = net.stages[0][0].conv.weight.detach()
    q = unpack_levels(arrays["stages.0.0.conv.weight.packed"], 4, w.numel()).reshape(w.shape)
    deq = q * arrays["stages.0.0.conv.weight.scale"][:, None, None, None]
    np.testing.assert_allclose(deq, fake_quant(w, 4).numpy(), atol=1e-6)


def test_activation_quantizers_add_their_scale_and_zero_point(tmp_path: Path) -> None:
    cand = candidate("mlp", wbits=8, abits=8)
    net = net_of(cand)
    plain = write_packed(tmp_path / "plain.safetensors", net)
    plain_payload, _ = _payload(tmp_path / "plain.safetensors")
    quants = attach_act_quant(net)
    calibrate(net, [inputs(cand, 32)])
    size = write_packed(tmp_path / "q.safetensors", net)
    payload, arrays = _payload(tmp_path / "q.safetensors")
    assert payload == plain_payload + 8 * len(quants)  # float32 scale + int32 zero point
    assert size > plain
    scales = [k for k in arrays if k.endswith(".act.scale")]
    assert len(scales) == len(quants) == 2  # both stages; the head stays float (abits 32)
    for k in scales:
        zp = arrays[k.replace(".scale", ".zero_point")]
        assert zp.dtype == np.int32 and 0 <= int(zp[0]) <= 255
        assert arrays[k].dtype == np.float32 and float(arrays[k][0]) > 0


def _mlp(bits: int) -> Net:
    cand = Candidate(
        space="test",
        family="mlp",
        input_shape=(64,),
        num_classes=10,
        stages=(Stage(width=128, wbits=bits), Stage(width=64, wbits=bits)),
        head_wbits=bits,
    )
    return build_model(cand).eval()


def test_four_bit_weights_are_an_eighth_of_float32(tmp_path: Path) -> None:
    sizes, payloads = {}, {}
    for bits in (32, 16, 4):
        path = tmp_path / f"w{bits}.safetensors"
        sizes[bits] = write_packed(path, _mlp(bits))
        payloads[bits] = _payload(path)
    _, a32 = payloads[32]
    _, a4 = payloads[4]
    weights = 64 * 128 + 128 * 64 + 64 * 10
    channels, biases = 128 + 64 + 10, 128 + 64 + 10
    assert payloads[32][0] == 4 * count_params(_mlp(32)) == 4 * (weights + biases)
    w32 = sum(a.nbytes for k, a in a32.items() if k.endswith(".weight"))
    w4 = sum(a.nbytes for k, a in a4.items() if k.endswith(".weight.packed"))
    assert w32 == 4 * weights
    assert w4 == w32 // 8  # two levels per byte
    # the 4-bit payload: 1/8 of the float weights + a float32 scale per output channel
    # + the float32 biases, exactly
    assert payloads[4][0] == w32 // 8 + 4 * channels + 4 * biases
    assert sizes[4] < sizes[16] < sizes[32]
    assert sizes[4] < sizes[32] / 5  # header included


def test_packed_size_tracks_pruning() -> None:
    cand = candidate("resnet", wbits=8, prune=0.5)
    dense = net_of(cand)
    pruned = prune_model(net_of(cand), "l1")
    assert packed_size(pruned) < 0.6 * packed_size(dense)


def test_packed_file_stores_and_describes_every_layer(tmp_path: Path) -> None:
    net = net_of(candidate("mbv2", wbits=2))
    path = tmp_path / "m.safetensors"
    write_packed(path, net)
    _, arrays = _payload(path)
    with safe_open(str(path), "np") as f:
        meta = f.metadata() or {}
    text = json.dumps(meta)
    for name, m in net.named_modules():
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear):
            assert any(k.startswith(f"{name}.weight") for k in arrays), name
            assert name in text, name
