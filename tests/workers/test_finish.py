"""A shipped library whose tuning was partial is finished before verification: its missing
tasks tuned, the library rebuilt from the kept Relax module, re-checked against the stored
PyTorch outputs and replaced; without budget it stays as it was and says why."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from hw_profiles import get_profile
from tests.workers.factories import candidate, inputs, net_of
from workers.compress.quantize import attach_act_quant, calibrate, quantize_weights
from workers.probe import ProbeOptions, probe
from workers.probe.finish import check_beside, finish_library, relax_beside


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow  # tunes two small tasks (~1 min on two shared cores)
def test_partial_library_is_tuned_rebuilt_and_checked(tmp_path: Path) -> None:
    cand = candidate("mlp", wbits=8, abits=8)
    net = net_of(cand)
    attach_act_quant(net)
    calibrate(net, [inputs(cand, batch=64, seed=s) for s in range(2)])
    quantize_weights(net)
    profile = get_profile("x86/local")
    root = tmp_path / "tuning"
    lib = tmp_path / "bundle" / "tvm" / "x86_local.so"
    batch = inputs(cand, batch=32, seed=4)
    st = probe(
        net,
        batch[:1],
        profile,
        options=ProbeOptions(tuning_root=root, tune_budget_s=0.0),
        check_inputs=batch,
        library_path=lib,
    )
    assert st.partial and st.untuned_tasks
    assert relax_beside(lib).is_file() and check_beside(lib).is_file()
    with np.load(check_beside(lib), allow_pickle=False) as z:
        assert z["inputs"].shape[0] == 32 and z["reference"].shape == (32, 10)
    before = _digest(lib)

    kept = finish_library(lib, profile, root, budget_s=0.0)
    assert not kept.rebuilt and kept.untuned and "still untuned" in kept.why
    assert _digest(lib) == before and relax_beside(lib).is_file()

    done = finish_library(lib, profile, root, budget_s=600.0)
    assert done.rebuilt and not done.untuned and done.tasks == st.tasks
    assert done.argmax_agreement == 1.0
    assert _digest(lib) != before  # a new build, with the tuned schedules
    assert not relax_beside(lib).exists() and not check_beside(lib).exists()


def test_nothing_kept_nothing_finished(tmp_path: Path) -> None:
    lib = tmp_path / "m.so"
    lib.write_bytes(b"not rebuilt")
    fin = finish_library(lib, get_profile("x86/local"), tmp_path / "tuning", 60.0)
    assert not fin.rebuilt and fin.why == "no lowered module kept beside the library"
    assert lib.read_bytes() == b"not rebuilt"
