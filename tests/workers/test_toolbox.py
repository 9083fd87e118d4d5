"""The compression toolbox beyond integers: ternary, binary, true 2-bit, k-means codebooks,
unstructured sparsity and relation KD; their codes, packing (read back with numpy alone),
and the passes on small networks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from torch import nn

from search_spaces import Candidate, Distill, Stage
from workers.compress import write_packed
from workers.compress.cluster import attach_clusters, codebook_of, kmeans_1d
from workers.compress.codes import coded, weight_levels
from workers.compress.pipeline import compress
from workers.compress.quantize import bake
from workers.compress.sparse import bake_masks, set_sparsity, sparsify_model, sparsity_of
from workers.data import Split
from workers.models import LayerSpec, build_model, spec_of, weight_layers
from workers.train import Recipe, relation_loss

CODES = [
    LayerSpec(8),
    LayerSpec(4),
    LayerSpec(2),
    LayerSpec(2, wformat="ternary"),
    LayerSpec(1, wformat="binary"),
]
LEVELS = {
    ("int", 2): {-2, -1, 0, 1},
    ("ternary", 2): {-1, 0, 1},
    ("binary", 1): {-1, 1},
}


@pytest.mark.parametrize("spec", CODES, ids=lambda s: f"{s.wformat}{s.wbits}")
@pytest.mark.parametrize("seed", range(4))
def test_codes_are_idempotent_and_use_their_levels(spec: LayerSpec, seed: int) -> None:
    torch.manual_seed(seed)
    w = torch.randn(8, 4, 3, 3) * 0.2
    w[0] = 0.05  # a constant channel
    once = coded(w, spec)
    assert torch.equal(coded(once, spec), once)  # re-coding baked weights changes nothing
    q, scale = weight_levels(w, spec)
    expected = LEVELS.get((spec.wformat, spec.wbits))
    if expected is not None:
        assert set(q.unique().tolist()) <= expected
    torch.testing.assert_close(q.float() * scale.view(-1, 1, 1, 1), once)
    assert (scale > 0).all()


def test_ternary_threshold_and_binary_scale() -> None:
    w = torch.tensor([[1.0, -1.0, 0.1, -0.1, 0.5, -0.5, 0.0, 2.0]])
    t, _ = weight_levels(w, LayerSpec(2, wformat="ternary"))
    # TWN: delta = 0.7 * mean|w| = 0.7 * 0.65 = 0.455: 0.1 and 0.0 go to zero
    assert t.tolist() == [[1, -1, 0, 0, 1, -1, 0, 1]]
    b, a = weight_levels(w, LayerSpec(1))
    assert b.tolist() == [[1, -1, 1, -1, 1, -1, 1, 1]]
    assert a.item() == pytest.approx(w.abs().mean().item())


def test_kmeans_codebook_has_its_size_and_beats_uniform_at_equal_bits() -> None:
    torch.manual_seed(0)
    w = torch.randn(4096) ** 3  # heavy-tailed, as trained weights are
    centroids, idx = kmeans_1d(w, 16)
    assert centroids.shape == (16,) and int(idx.max()) < 16
    err_km = float(((centroids[idx] - w) ** 2).mean())
    err_int4 = float(((coded(w.view(1, -1), LayerSpec(4)).view(-1) - w) ** 2).mean())
    assert err_km < err_int4


def _cnn(head_wbits: int = 8, **comp: object) -> Candidate:
    return Candidate(
        space="test",
        family="cnn",
        input_shape=(1, 12, 12),
        num_classes=4,
        stages=(Stage(width=16, stride=2, **comp), Stage(width=32, stride=2, **comp)),  # type: ignore[arg-type]
        head_wbits=head_wbits,
    )


def _data(n: int = 256, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 1, 12, 12)).astype(np.float32)
    y = (x[:, 0, :6].mean(axis=(1, 2)) > 0).astype(np.int64) + 2 * (
        x[:, 0, 6:].mean(axis=(1, 2)) > 0
    )
    return Split(x, y.astype(np.int64))


RECIPE = Recipe(epochs=1, finetune_epochs=1, qat_epochs=1, batch_size=64, calib_batches=2)


def test_sparsity_per_layer_global_and_gradual() -> None:
    net = build_model(_cnn(sparsity=0.75))
    assert set_sparsity(net) == 2  # the two stage convs; the head stays dense
    for _, layer in weight_layers(net):
        if spec_of(layer).sparsity:
            assert sparsity_of(layer.weight) == pytest.approx(0.75, abs=1 / layer.weight.numel())
    bake_masks(net)
    net = build_model(_cnn(sparsity=0.5))
    set_sparsity(net, scope="global")
    layers = [m for _, m in weight_layers(net) if spec_of(m).sparsity]
    zeros = sum(int((m.weight == 0).sum()) for m in layers)
    total = sum(m.weight.numel() for m in layers)
    assert zeros / total == pytest.approx(0.5, abs=2 / total)
    rounds: list[float] = []

    def finetune(n: nn.Module, epochs: int) -> None:
        rounds.append(sparsity_of(layers[0].weight))

    net = build_model(_cnn(sparsity=0.9))
    layers = [m for _, m in weight_layers(net) if spec_of(m).sparsity]
    sparsify_model(net, steps=3, finetune=finetune)  # type: ignore[arg-type]
    assert len(rounds) == 2 and rounds[0] < rounds[1] < 0.9  # cubic schedule, rising
    assert sparsity_of(layers[0].weight) == pytest.approx(0.9, abs=0.01)


def _read_layer(
    arrays: dict[str, np.ndarray], meta: list[object], name: str, shape: list[int]
) -> np.ndarray:
    """Decode one layer of the packed file with numpy alone (what a deployer would write)."""
    bits = int(meta[0])  # type: ignore[call-overload]
    named = [m for m in meta[2:] if m != "sparse"]
    fmt = str(named[0]) if named else ("binary" if bits == 1 else "")  # the default for bits
    sparse = "sparse" in meta
    n = int(np.prod(shape))
    keep = (
        np.unpackbits(arrays[f"{name}.weight.mask"], bitorder="little")[:n].astype(bool)
        if sparse
        else np.ones(n, bool)
    )
    count = int(keep.sum())

    def unpack(key: str, signed: bool) -> np.ndarray:
        raw = np.unpackbits(arrays[key], bitorder="little")[: count * bits].reshape(count, bits)
        v = (raw.astype(np.int64) << np.arange(bits)).sum(axis=1)
        return np.where(v >= 1 << (bits - 1), v - (1 << bits), v) if signed else v

    out = np.zeros(n, np.float32)
    if fmt == "kmeans":
        out[keep] = arrays[f"{name}.weight.codebook"][unpack(f"{name}.weight.index", False)]
    elif f"{name}.weight.packed" in arrays:
        levels = unpack(f"{name}.weight.packed", signed=fmt != "binary")
        if fmt == "binary":
            levels = 2 * levels - 1
        per_channel = np.repeat(arrays[f"{name}.weight.scale"], n // shape[0])
        out[keep] = levels * per_channel[keep]
    else:
        out[keep] = arrays[f"{name}.weight"].reshape(-1).astype(np.float32)
    return out.reshape(shape)


@pytest.mark.parametrize(
    "comp",
    [
        {"wbits": 2, "wformat": "ternary", "sparsity": 0.5},
        {"wbits": 1, "wformat": "binary"},
        {"wbits": 2},
        {"wbits": 4, "wformat": "kmeans"},
        {"wbits": 3, "wformat": "kmeans", "sparsity": 0.75},
        {"wbits": 32, "sparsity": 0.9},
        {"wbits": 8, "abits": 8, "sparsity": 0.5},
    ],
    ids=["ternary-s.5", "binary", "int2", "km4", "km3-s.75", "fp32-s.9", "int8-s.5"],
)
def test_compress_stores_what_it_computes(comp: dict[str, object], tmp_path: Path) -> None:
    cand = _cnn(**comp)
    parent = build_model(cand)
    child, info = compress(parent, _data(), RECIPE)
    size = write_packed(tmp_path / "w.safetensors", child)
    arrays = load_file(str(tmp_path / "w.safetensors"))
    with open(tmp_path / "w.safetensors", "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    metas = json.loads(header["__metadata__"]["hwnas.bits"])
    dense_bytes = 0
    for name, layer in weight_layers(child):
        spec = spec_of(layer)
        w = layer.weight.detach()
        got = _read_layer(arrays, metas[name], name, list(w.shape))
        np.testing.assert_array_equal(got, w.numpy())  # the file holds exactly the model
        dense_bytes += 4 * w.numel()
        if spec.sparsity:
            assert sparsity_of(w) >= spec.sparsity - 0.01
        if spec.wformat == "kmeans":
            assert len(np.unique(w[w != 0].numpy())) <= 2**spec.wbits
            assert info["clustered_layers"] == 2 and info["quantization"] == "qat"
    assert size < dense_bytes / 2


def test_clustered_centroids_train_and_indices_stay() -> None:
    net = build_model(_cnn(wbits=2, wformat="kmeans"))
    assert attach_clusters(net) == 2
    layer = net.stages[0][0].conv
    param = layer.parametrizations["weight"][0]
    before_book, before_idx = param.codebook.detach().clone(), param.index.clone()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x = torch.randn(8, 1, 12, 12)
    net(x).square().mean().backward()
    opt.step()
    assert not torch.equal(param.codebook.detach(), before_book)
    assert torch.equal(param.index, before_idx)
    bake(net)
    assert len(layer.weight.detach().unique()) <= 4


def test_codebook_of_refuses_too_many_values() -> None:
    with pytest.raises(ValueError, match="do not fit a 2-bit codebook"):
        codebook_of(np.arange(1, 6, dtype=np.float32), 2)


def test_relation_loss_is_zero_for_the_same_relations_and_scale_free() -> None:
    torch.manual_seed(0)
    a = torch.randn(16, 8, 3, 3)
    assert relation_loss(a, a * 3).item() == pytest.approx(0.0, abs=1e-6)
    assert relation_loss(a, torch.randn(16, 32)).item() > 1e-3  # widths may differ


def test_candidate_distill_overrides_the_recipe_only_with_kd_on() -> None:
    d = Distill(alpha=0.9, temperature=2.0, relation=100.0)
    on = Recipe(kd=True).with_distill(d)
    assert (on.kd_alpha, on.kd_temperature, on.kd_relation) == (0.9, 2.0, 100.0)
    assert Recipe(kd=False).with_distill(d) == Recipe(kd=False)
    assert Recipe().with_distill(None) == Recipe()


def test_sparse_and_codebook_layers_lower_to_the_dense_structure() -> None:
    """What the card and the benchmark say: sparse and k-means weights compute as dense float
    (the same lowered structure, so the same tuned latency), every integer code as int8."""
    from hw_profiles import get_profile
    from workers.compress.fold import fold_batchnorm
    from workers.models import example_input
    from workers.probe.cache import structure_hash, tensor_shapes
    from workers.probe.lowering import deployable, to_relax

    profile = get_profile("x86/local")

    def sid(net: nn.Module, cand: Candidate) -> str:
        dep, _ = deployable(net, profile)
        return structure_hash(to_relax(dep, example_input(cand)), tensor_shapes(dep))

    dense_cand = _cnn(head_wbits=32)
    dense = sid(fold_batchnorm(build_model(dense_cand).eval()), dense_cand)
    for comp in ({"wbits": 4, "wformat": "kmeans"}, {"sparsity": 0.75}):
        cand = _cnn(head_wbits=32, **comp)
        child, _ = compress(build_model(cand).eval(), _data(), RECIPE)
        assert sid(child, cand) == dense, comp
    ids = set()
    for comp in ({"wbits": 8}, {"wbits": 2, "wformat": "ternary"}, {"wbits": 1}):
        cand = _cnn(**comp, abits=8)
        child, _ = compress(build_model(cand).eval(), _data(), RECIPE)
        ids.add(sid(child, cand))
    assert len(ids) == 1 and dense not in ids
