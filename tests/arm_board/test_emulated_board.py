"""The ARM profiles' code, run: cross-compiled aarch64 libraries of both built-in ARM profiles
sent over TVM RPC to the emulated board (``conftest.py``), run there and checked against
PyTorch, fp32 and int8, with the ``sdot`` dot-product kernels on ``arm/rasp5`` (Cortex-A76)
and plain NEON on ``arm/rasp4b64`` (Cortex-A72). Timings from the board are labelled
``emulated``: they show the code runs, not how fast a board runs it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.arm_board.conftest import Board
from tests.workers.factories import candidate, inputs, net_of
from workers.compress import factorize_model, fold_batchnorm, prune_model
from workers.compress.quantize import attach_act_quant, calibrate, quantize_weights
from workers.probe import probe
from workers.records import ProbeStats

pytestmark = pytest.mark.arm_board


def _net(family: str, bits: int) -> tuple[torch.nn.Module, Any]:
    cand = candidate(family, wbits=bits, abits=bits, prune=0.25, rank=0.5)
    net = fold_batchnorm(factorize_model(prune_model(net_of(cand), "l1")))
    if bits == 8:
        attach_act_quant(net)
        calibrate(net, [inputs(cand, batch=64, seed=s) for s in range(2)])
        quantize_weights(net)
    return net.eval(), cand


def _disassembly(lib: Path) -> str:
    out = subprocess.run(
        ["aarch64-linux-gnu-objdump", "-d", str(lib)], capture_output=True, text=True, check=True
    )
    return out.stdout


def _elf_machine(lib: Path) -> str:
    out = subprocess.run(
        ["aarch64-linux-gnu-readelf", "-h", str(lib)], capture_output=True, text=True, check=True
    )
    return next(ln.split(":", 1)[1].strip() for ln in out.stdout.splitlines() if "Machine" in ln)


@pytest.mark.parametrize(
    ("name", "family", "bits"),
    [
        ("arm/rasp5", "cnn", 32),
        ("arm/rasp5", "cnn", 8),
        ("arm/rasp5", "mlp", 8),
        ("arm/rasp4b64", "cnn", 32),
        ("arm/rasp4b64", "cnn", 8),
    ],
)
def test_cross_compiled_library_runs_on_the_board_and_matches_pytorch(
    arm_board: Board, tmp_path: Path, name: str, family: str, bits: int
) -> None:
    profile = arm_board.profile(name)
    net, cand = _net(family, bits)
    batch = inputs(cand, batch=16, seed=5)
    lib = tmp_path / "model.so"
    stats: ProbeStats = probe(net, batch[:1], profile, check_inputs=batch, library_path=lib)

    assert _elf_machine(lib) == "AArch64"  # an x86 server could not have loaded it
    assert stats.via == "rpc" and stats.rpc == f"tracker {arm_board.tracker} {name[4:]}"
    assert stats.numerics_checked and stats.n_checked == 16
    assert stats.argmax_agreement == 1.0
    assert stats.rel_err is not None and stats.rel_err < 1e-4, stats.rel_err
    assert stats.emulated and stats.isa[0] == "aarch64"
    sdot = _disassembly(lib).count("sdot")
    if bits == 8:
        assert stats.precision.get("int8", 0) >= 2
        if name == "arm/rasp5":
            assert stats.int8_dot == "sdot"
            assert sdot > 0, "int8 layers on the Cortex-A76 profile must use sdot"
        else:
            assert stats.int8_dot == "none" and sdot == 0
    else:
        assert "int8" not in stats.precision and sdot == 0
