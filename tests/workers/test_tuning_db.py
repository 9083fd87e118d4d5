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
