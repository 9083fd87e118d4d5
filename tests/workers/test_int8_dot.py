"""int8 kernels in the dot-product layouts (VNNI: u8 x s8, 16x4 tiles; ARM sdot: s8 x s8, 4x4
tiles): numerics on this host for every layout, and the instructions in the compiled code for
targets this host cannot run (compile only; ``tests/arm_board`` runs the ARM code)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hw_profiles import Profile, get_profile
from tests.workers.factories import candidate, inputs, net_of
from workers.compress import factorize_model, fold_batchnorm, prune_model
from workers.compress.quantize import attach_act_quant, calibrate, quantize_weights
from workers.probe import int8_dot
from workers.probe.build import compile_module, export_library
from workers.probe.lowering import deployable, to_relax
from workers.probe.measure import run_outputs
from workers.probe.targets import device_of, resolve_target


def _quantized(family: str) -> tuple[torch.nn.Module, Any]:
    cand = candidate(family, wbits=8, abits=8, prune=0.25, rank=0.5)
    net = fold_batchnorm(factorize_model(prune_model(net_of(cand), "l1")))
    attach_act_quant(net)
    calibrate(net, [inputs(cand, batch=64, seed=s) for s in range(2)])
    return quantize_weights(net).eval(), cand


@pytest.mark.parametrize("path", ["vnni", "sdot"])
def test_weight_packing_is_the_tile_layout(path: str) -> None:
    rng = np.random.default_rng(0)
    ob = int8_dot.out_block(path)
    w = rng.integers(-128, 128, (19, 7, 3, 3)).astype(np.int8)  # neither 4 nor 16 divides
    p = int8_dot.pack_conv_weight(w, path)
    assert p.shape == (-(-19 // ob), 3, 3, 2, ob, 4)
    for oc, ic, kh, kw in [(0, 0, 0, 0), (18, 6, 2, 1), (5, 3, 1, 2)]:
        assert p[oc // ob, kh, kw, ic // 4, oc % ob, ic % 4] == w[oc, ic, kh, kw]
    assert not p[:, :, :, 1, :, 3].any()  # input channel 7 is padding
    assert not p[-1, :, :, :, 19 % ob :].any()  # so are output channels 19..
    d = rng.integers(-128, 128, (10, 13)).astype(np.int8)
    q = int8_dot.pack_dense_weight(d, path)
    assert q[9 // ob, 12 // 4, 9 % ob, 12 % 4] == d[9, 12]
    assert q.sum(dtype=np.int64) == d.sum(dtype=np.int64)  # padding adds zeros only


@pytest.mark.parametrize("family", ["cnn", "mlp", "mbv2"])
def test_dot_layouts_compute_what_pytorch_computes(family: str) -> None:
    """Each layout, compiled for this CPU, gives the plain int8 path's outputs (the integer
    arithmetic is exact; only the float requantization rounds)."""
    from tvm import relax

    profile = get_profile("x86/local")
    target, dev = resolve_target(profile), device_of(profile)
    net, cand = _quantized(family)
    x = inputs(cand, batch=32, seed=3)
    with torch.no_grad():
        ref = net(x).numpy()
    dep, precision = deployable(net, profile)
    assert precision["int8"] >= 2
    singles = [x[j : j + 1].numpy() for j in range(len(x))]
    outs = {}
    for path in ("none", "vnni", "sdot"):
        mod = to_relax(dep, x[:1], int8_dot_path=path)
        assert ("qconv2d_dot" in mod.script() or "qdense_dot" in mod.script()) == (path != "none")
        vm = relax.VirtualMachine(compile_module(mod, target, profile, None), dev)
        outs[path] = run_outputs(vm, dev, singles)
        assert (outs[path].argmax(1) == ref.argmax(1)).mean() == 1.0, path
    scale = float(np.abs(ref).max())
    for path in ("vnni", "sdot"):
        assert np.abs(outs[path] - outs["none"]).max() <= 1e-5 * scale, path


def _profile(name: str, target: dict[str, Any], dot: str, **extra: Any) -> Profile:
    return Profile.model_validate(
        {"name": name, "target": target, "supports": {"int8_dot": dot}, **extra}
    )


@pytest.mark.parametrize(
    ("profile", "tool", "instruction"),
    [
        (
            _profile(
                "test/vnni",
                {"kind": "llvm", "mcpu": "cascadelake", "mtriple": "x86_64-linux-gnu"},
                "vnni",
                measure={"via": "rpc", "host": "127.0.0.1:1"},
            ),
            "objdump",
            "vpdpbusd",
        ),
        (get_profile("arm/rasp5"), "aarch64-linux-gnu-objdump", "sdot"),
    ],
    ids=["vnni", "sdot"],
)
def test_untuned_int8_layers_compile_to_the_dot_product_instruction(
    profile: Profile, tool: str, instruction: str, tmp_path: Path
) -> None:
    """No tuning record: the int8 conv and dense still get a tensorized schedule
    (``workers.probe.dot_defaults``), so the library holds the instruction (this host need not
    run it: the VNNI library is only disassembled)."""
    net, cand = _quantized("cnn")
    dep, _ = deployable(net, profile)
    target = resolve_target(profile)
    ex = compile_module(to_relax(dep, inputs(cand, batch=1), profile), target, profile, None)
    lib = tmp_path / "m.so"
    export_library(ex, lib, profile)
    asm = subprocess.run([tool, "-d", str(lib)], capture_output=True, text=True, check=True).stdout
    assert asm.count(instruction) >= 2, f"{instruction} not in the {profile.name} library"


def test_self_check_catches_an_instruction_this_cpu_cannot_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """VNNI code built for Cascade Lake runs in a child process: on a CPU without VNNI the
    child dies of an illegal instruction and the check says so; with VNNI it computes exactly.
    The verdict is cached (no second child)."""
    from hw_profiles.isa import host_int8_dots
    from workers.probe import dot_check

    monkeypatch.setenv("HWNAS_CANARY_DIR", str(tmp_path / "canary"))
    ok, why = dot_check.dot_path_works("vnni", "cascadelake")
    if "vnni" in host_int8_dots():
        assert ok, why
    else:
        assert not ok and "illegal instruction: this CPU cannot run it" in why
    monkeypatch.setattr(dot_check.subprocess, "run", lambda *a, **k: pytest.fail("not cached"))
    assert dot_check.dot_path_works("vnni", "cascadelake") == (ok, why)


def test_a_path_that_fails_its_self_check_is_labelled_not_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from workers.probe import dot_check

    profile = get_profile("x86/local")
    monkeypatch.setattr(dot_check, "resolve_int8_dot", lambda p: "vnni")
    monkeypatch.setattr(dot_check, "dot_path_works", lambda path: (False, "it broke"))
    assert dot_check.usable_int8_dot(profile) == ("none", "it broke")
    monkeypatch.setattr(dot_check, "dot_path_works", lambda path: (True, "checked"))
    assert dot_check.usable_int8_dot(profile) == ("vnni", None)
    board = get_profile("arm/rasp5")  # a board is not this host: nothing to run here
    monkeypatch.setattr(dot_check, "resolve_int8_dot", lambda p: "sdot")
    monkeypatch.setattr(dot_check, "dot_path_works", lambda path: pytest.fail("ran"))
    assert dot_check.usable_int8_dot(board) == ("sdot", None)
