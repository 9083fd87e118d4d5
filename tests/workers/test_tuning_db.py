"""The tuning database is parsed once per process and re-read when another writer changed it."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.probe import tuning


def test_open_db_reuses_the_parsed_database_until_its_files_change(tmp_path: Path) -> None:
    a = tuning.open_db(tmp_path / "db")
    assert tuning.open_db(tmp_path / "db") is a
    with (tmp_path / "db" / "database_workload.json").open("a") as f:
        f.write("")  # same size: still the same parse
    assert tuning.open_db(tmp_path / "db") is a
    other = tuning.open_db(tmp_path / "other")
    assert other is not a
    # another writer commits a workload: this process must not serve its stale copy
    _other_writer_commits(tmp_path / "db")
    b = tuning.open_db(tmp_path / "db")
    assert b is not a and b.has_workload(_workload())
    tuning.restamp(tmp_path / "db", b)
    assert tuning.open_db(tmp_path / "db") is b


def test_databases_are_keyed_by_module_equality(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hw_profiles import get_profile
    from workers.probe.targets import resolve_target

    profile = get_profile("x86/local")
    target = resolve_target(profile)
    path = tuning.db_dir(tmp_path, profile, target)
    assert tuning.MODULE_EQUALITY == "structural" and path.name.count("-") == 2  # tvm-<v>-<h>
    monkeypatch.setattr(tuning, "MODULE_EQUALITY", "anchor-block")
    assert tuning.db_dir(tmp_path, profile, target).name == f"{path.name}-anchor-block"


def _workload() -> object:
    import tvm
    from tvm import te

    a = te.placeholder((4,), name="A")
    b = te.compute((4,), lambda i: a[i] + 1.0, name="B")
    return tvm.IRModule({"main": te.create_prim_func([a, b])})


def _other_writer_commits(path: Path) -> None:
    from tvm.s_tir import meta_schedule as ms

    writer = ms.database.JSONDatabase(work_dir=str(path), module_equality=tuning.MODULE_EQUALITY)
    writer.commit_workload(_workload())


def test_compiling_the_fused_module_matches_compile_relax(tmp_path: Path) -> None:
    """The probe compiles the module its tasks were extracted from (no second legalize +
    fuse); the result must compute what ``compile_relax`` on the unfused module computes."""
    import numpy as np

    from hw_profiles import get_profile
    from workers.probe.build import compile_module, tuning_state
    from workers.probe.canary import canary_input, canary_net
    from workers.probe.lowering import to_relax
    from workers.probe.measure import run_outputs
    from workers.probe.targets import device_of, resolve_target, tvm

    tvm()  # sets TVM's thread count before the import
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    profile = get_profile("x86/local")
    target = resolve_target(profile)
    mod = to_relax(canary_net(), canary_input())
    state = tuning_state(mod, target, profile, tmp_path, 0.0)  # no records: default schedules
    assert state.fused is not None and len(state.tasks) > 0
    dev = device_of(profile)
    x = [np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)]
    fused = run_outputs(
        relax.VirtualMachine(compile_module(mod, target, profile, state), dev),
        dev,
        x,
    )
    whole = run_outputs(
        relax.VirtualMachine(
            ms.relax_integration.compile_relax(state.db, tuning.prepare(mod), target, None), dev
        ),
        dev,
        x,
    )
    np.testing.assert_allclose(fused, whole, rtol=1e-5, atol=1e-6)
