"""TVM latency probe on x86/local: numerics match PyTorch, stats are sane, smaller is faster;
int8 layers lower to integer kernels; the probe cache and the partial flag."""

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
from workers.compress.quantize import attach_act_quant, calibrate, quantize_weights
from workers.models import Net, build_model, example_input
from workers.probe import ProbeError, ProbeOptions, probe
from workers.records import ProbeStats


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


def _check_stats(stats: ProbeStats, profile: Profile) -> None:
    assert stats.max_abs_err is not None and stats.max_abs_err < 1e-4
    assert stats.median_ms > 0
    assert stats.min_ms <= stats.median_ms <= stats.max_ms
    assert stats.cv >= 0
    assert stats.iqr_ms >= 0
    assert stats.repeat == profile.measure.repeat
    assert stats.number >= profile.measure.number  # more when one sample is under min_repeat_ms
    assert stats.canary_ms is not None and stats.canary_ms > 0 and stats.normalized is not None
    assert stats.tuning == "untuned" and stats.partial is False
    assert stats.argmax_agreement == 1.0
    target = json.loads(stats.target)
    assert target["kind"] == "llvm"
    assert target["mcpu"] != "host"  # resolved to this machine's CPU
    assert stats.compile_s is not None and stats.compile_s > 0


def test_probe_small_models_and_pruned_is_faster(tmp_path: Path) -> None:
    profile = get_profile("x86/local")

    mlp = _cand("mlp", (64,), Stage(width=32))
    lib = tmp_path / "tvm" / "mlp.so"
    stats = probe(_net(mlp), example_input(mlp), profile, library_path=lib)
    _check_stats(stats, profile)
    assert lib.is_file() and lib.stat().st_size > 0

    cnn = _cand("cnn", (1, 8, 8), Stage(width=8, stride=2), Stage(width=16))
    net = _net(cnn)
    with torch.no_grad():  # non-trivial BN so the lowered BN arithmetic is checked
        for bn in net.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.running_mean.uniform_(-1, 1)
                bn.running_var.uniform_(0.5, 2)
    _check_stats(probe(net, example_input(cnn), profile), profile)

    # The same architecture, 50% pruned and factorized, must measure faster than dense.
    big = _cand("mlp", (64,), Stage(width=512, prune=0.5), Stage(width=512, prune=0.5, rank=0.25))
    dense = _net(big)
    small = prune_model(_net(big), "l1")
    fold_batchnorm(small)
    factorize_model(small)
    assert isinstance(small.stages[1][0].fc, torch.nn.Sequential)
    example = example_input(big)
    t_dense = probe(dense, example, profile)
    t_small = probe(small, example, profile)
    _check_stats(t_small, profile)
    ratio = t_small.median_ms / t_dense.median_ms
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
    stats = probe(net, inputs(cand, batch=1), profile)
    _check_stats(stats, profile)


def _quantized(family: str, **comp: Any) -> tuple[Net, Candidate]:
    cand = candidate(family, wbits=8, abits=8, **comp)
    net = fold_batchnorm(factorize_model(prune_model(net_of(cand), "l1")))
    attach_act_quant(net)
    calibrate(net, [inputs(cand, batch=64, seed=s) for s in range(2)])
    return quantize_weights(net), cand


@pytest.mark.parametrize("family", ["cnn", "mlp", "mbv2"])
def test_int8_layers_lower_to_integer_kernels_and_match_fake_quant(family: str) -> None:
    net, cand = _quantized(family, prune=0.25, rank=0.5)
    batch = inputs(cand, batch=128, seed=7)
    stats = probe(net, batch[:1], get_profile("x86/local"), check_inputs=batch)
    assert stats.precision["int8"] >= 2
    assert stats.argmax_agreement >= 0.99
    assert stats.n_checked == 128
    mod_text = _lowered_text(net, cand)
    assert 'out_dtype="int32"' in mod_text and "int8" in mod_text


def _lowered_text(net: Net, cand: Candidate) -> str:
    from workers.probe.lowering import deployable, to_relax

    dep, _ = deployable(net, get_profile("x86/local"))
    return str(to_relax(dep, inputs(cand, batch=1)).script(show_meta=False))


def test_numerics_check_rejects_a_wrong_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lowering that computes something else is a ProbeError, not a latency."""
    net, cand = _quantized("cnn")
    from workers.probe import core

    real = core.deployable

    def broken(model: torch.nn.Module, profile: Profile) -> Any:
        dep, counts = real(model, profile)
        with torch.no_grad():
            for p in dep.parameters():
                p.mul_(-1)
            for name, b in dep.named_buffers():
                if name.endswith("w_scale"):
                    b.mul_(-1)
        return dep, counts

    monkeypatch.setattr(core, "deployable", broken)
    batch = inputs(cand, batch=64, seed=3)
    with pytest.raises(ProbeError, match="argmax agreement"):
        probe(net, batch[:1], get_profile("x86/local"), check_inputs=batch)


def test_probe_cache_keys_on_structure_not_weights(tmp_path: Path) -> None:
    """Same structure, other weights: measured once. An empty tuning database with no budget
    gives a partial probe, which is never cached; an untuned probe (no tuning asked) is."""
    profile = get_profile("x86/local")
    mlp = _cand("mlp", (64,), Stage(width=32))
    opts = ProbeOptions(tuning_root=tmp_path / "tuning", cache_dir=tmp_path / "cache")
    first = probe(_net(mlp), example_input(mlp), profile, options=opts)
    assert first.tuning == "metaschedule" and first.partial is True
    assert first.tasks >= 1 and len(first.untuned_tasks) == first.tasks
    assert not first.cache_hit
    assert not list((tmp_path / "cache").rglob("*.json"))  # partial: not cached

    opts_untuned = ProbeOptions(cache_dir=tmp_path / "cache2")
    a = probe(_net(mlp), example_input(mlp), profile, options=opts_untuned)
    assert not a.cache_hit and a.tuning == "untuned" and a.partial is False
    # no tuning asked for: the default-schedule timing is cached, under its own key
    assert len(list((tmp_path / "cache2").rglob("*.json"))) == 1
    other = _net(mlp)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.01)
    assert probe(other, example_input(mlp), profile, options=opts_untuned).cache_hit


def test_structure_hash_ignores_weights_and_scales() -> None:
    from workers.probe.cache import structure_hash
    from workers.probe.lowering import deployable, to_relax

    profile = get_profile("x86/local")
    net_a, cand = _quantized("cnn")
    torch.manual_seed(5)
    net_b, _ = _quantized("cnn")
    with torch.no_grad():
        for p in net_b.parameters():
            p.add_(0.01)
    x = inputs(cand, batch=1)
    h = [structure_hash(to_relax(deployable(n, profile)[0], x)) for n in (net_a, net_b)]
    assert h[0] == h[1]
    other, _ = _quantized("cnn", prune=0.5)
    assert structure_hash(to_relax(deployable(other, profile)[0], x)) != h[0]


@pytest.mark.slow
def test_tuned_probe_ranks_pruned_below_dense_and_caches(tmp_path: Path) -> None:
    """MetaSchedule-tuned probes (a small MLP: few tasks): no task left untuned, the pruned and
    factorized variant measures faster than the dense one in the same run, and a second
    probe of the same structure is a cache hit."""
    profile = get_profile("x86/local")
    opts = ProbeOptions(
        tuning_root=tmp_path / "tuning", cache_dir=tmp_path / "cache", tune_budget_s=600
    )
    big = _cand("mlp", (64,), Stage(width=512, prune=0.5), Stage(width=512, prune=0.5, rank=0.25))
    dense = _net(big)
    small = fold_batchnorm(factorize_model(prune_model(_net(big), "l1")))
    example = example_input(big)
    t_dense = probe(dense, example, profile, options=opts)
    t_small = probe(small, example, profile, options=opts)
    for st in (t_dense, t_small):
        assert st.tuning == "metaschedule" and st.partial is False, st.untuned_tasks
        assert st.max_abs_err < 1e-4 and not st.cache_hit
    assert t_small.median_ms < t_dense.median_ms
    again = probe(_net(big), example, profile, options=opts)  # other weights, same structure
    assert again.cache_hit and again.median_ms == t_dense.median_ms
    assert again.tune_s < 5


def test_int8_tasks_do_not_depend_on_calibration() -> None:
    """Scales and zero points are tensor constants, not literals in the kernels: the same
    structure calibrated on other data brings the same tuning tasks (records carry over)."""
    from workers.probe import tuning
    from workers.probe.lowering import deployable, to_relax
    from workers.probe.targets import resolve_target

    profile = get_profile("x86/local")
    target = resolve_target(profile)
    cand = candidate("cnn", wbits=8, abits=8)
    keys = []
    for shift in (0.0, 3.0):
        net = fold_batchnorm(net_of(cand))
        attach_act_quant(net)
        calibrate(net, [inputs(cand, batch=64, seed=s) + shift for s in range(2)])
        dep, _ = deployable(quantize_weights(net), profile)
        fused = tuning.fuse(to_relax(dep, inputs(cand, batch=1)), target)
        keys.append(sorted(tuning.task_key(t) for t in tuning.extract(fused, target)))
    assert keys[0] == keys[1]
