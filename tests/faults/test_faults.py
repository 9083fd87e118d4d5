"""The fault-injection suite: every fault kind on a tiny real job (digits, 4 trials, real Ray,
real scheduler processes), then the invariants of checks.py. Slow-marked; CI runs it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.faults.scenarios import KINDS, NEEDS_PG, run_kind

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_job_survives(kind: str, tmp_path: Path) -> None:
    if kind in NEEDS_PG and not os.environ.get("HWNAS_TEST_PG_DIR"):
        pytest.skip("needs the tests' private PostgreSQL (make test runs scripts/with-postgres.sh)")
    out = run_kind(kind, tmp_path)
    assert out.injected >= 1, f"{kind}: the fault was not injected"
    assert out.problems == [], out.public()
    assert out.survived == 1 and out.trials_lost == 0 and out.duplicates == 0, out.public()
