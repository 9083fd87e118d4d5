"""``hwnas tune-profile``: pre-tunes a space's tasks into the shared database, resumably."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _run(tmp_path: Path, *extra: str) -> dict[str, object]:
    env = {**os.environ, "HWNAS_TUNING_DIR": str(tmp_path / "tuning"), "TVM_NUM_THREADS": "1"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "tune-profile",
            "x86/local",
            "--space",
            "mlp_small",
            "--dataset",
            "digits",
            "--candidates",
            "2",
            *extra,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "distinct tasks" in out.stdout  # progress is shown
    report: dict[str, object] = json.loads(out.stdout[out.stdout.rindex("{\n") :])
    return report


def test_tune_profile_tunes_then_resumes_with_nothing_left(tmp_path: Path) -> None:
    first = _run(tmp_path)
    assert first["tasks"] and first["tuned"] == first["tasks"], first
    assert first["failed"] == 0 and first["skipped"] == 0
    assert Path(str(first["db"])).is_relative_to(tmp_path / "tuning")
    again = _run(tmp_path)
    assert again["already_tuned"] == again["tasks"] == first["tasks"]
    assert again["tuned"] == 0 and float(str(again["seconds"])) < 60  # nothing left to tune


def test_tune_profile_refuses_unreachable_profiles(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "tune-profile",
            "arm/rasp4b64",
            "--space",
            "mlp_small",
            "--dataset",
            "digits",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 2 and "'arm/rasp4b64' is not reachable" in out.stderr
