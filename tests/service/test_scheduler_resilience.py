"""A scheduler no job can kill: whatever is wrong with one job fails that job with the reason and
the scheduler goes on; ``hwnas serve`` restarts a scheduler that dies."""

from __future__ import annotations

import copy
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from service.db import accounts, queue
from service.db.models import Job, JobStatus
from service.db.session import get_sessionmaker
from service.scheduler.controller import JobController
from service.scheduler.loop import run_scheduler
from service.supervise import Supervisor
from tests.service.inline import InlineExecutor, settings_for

SPEC: dict[str, Any] = {
    "schema_version": 1,
    "dataset": "digits",
    "space": "mlp_small",
    "profiles": ["x86/local"],
    "objectives": ["accuracy", "size"],
    "budget": {"trials": 1, "tune_s": 0.0},
    "tuning": "off",
}


def _row(url: str, spec: dict[str, Any]) -> int:
    """A job row as an older service (or a bug) may have stored it: no API check."""
    with get_sessionmaker(url)() as s:
        job = Job(name="raw", spec=spec, owner_id=accounts.admin_user(session=s).id)
        s.add(job)
        s.commit()
        return job.id


def _job(url: str, job_id: int) -> Job:
    with get_sessionmaker(url)() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job


def test_a_stored_spec_past_its_bounds_fails_the_job_not_the_scheduler(
    db_url: str, tmp_path: Path
) -> None:
    """The reproduction: a budget extended past 86,400 tuning seconds made JobSpec validation
    raise outside the controller's try, and every scheduler that claimed the job died."""
    spec = copy.deepcopy(SPEC)
    spec["budget"]["tune_s"] = 87_300.0
    job_id = _row(db_url, spec)
    with get_sessionmaker(db_url)() as s:
        assert queue.claim_job(session=s, worker_id="t", stale_after_s=60) is not None
    status = JobController(settings_for(db_url, tmp_path), InlineExecutor(set()), job_id, "t").run()
    assert status == JobStatus.failed
    job = _job(db_url, job_id)
    assert job.status == JobStatus.failed and job.finished_at is not None
    assert job.error is not None and "budget.tune_s" in job.error and "86400" in job.error


def test_an_unreachable_profile_at_claim_fails_the_job_with_the_reason(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HWNAS_RPC_TRACKER", "127.0.0.1:9")  # nothing listens on port 9
    job_id = _row(db_url, {**SPEC, "profiles": ["x86/local", "arm/rasp5"]})
    with get_sessionmaker(db_url)() as s:
        assert queue.claim_job(session=s, worker_id="t", stale_after_s=60) is not None
    status = JobController(settings_for(db_url, tmp_path), InlineExecutor(set()), job_id, "t").run()
    assert status == JobStatus.failed
    error = _job(db_url, job_id).error or ""
    assert "DeviceUnreachableError" in error and "'arm/rasp5' is not reachable" in error


def test_the_scheduler_goes_on_after_bad_jobs_and_database_errors(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = copy.deepcopy(SPEC)
    bad["budget"]["trials"] = 0
    first, second = _row(db_url, bad), _row(db_url, {**SPEC, "space": "no_such_space"})
    real_claim = queue.claim_job
    calls = {"n": 0}

    def flaky_claim(**kw: Any) -> Job | None:
        calls["n"] += 1
        if calls["n"] == 2:  # the database goes away once, between the two jobs
            raise ConnectionError("injected: database unreachable")
        return real_claim(**kw)

    monkeypatch.setattr("service.scheduler.loop.claim_job", flaky_claim)
    settings = settings_for(db_url, tmp_path).model_copy(update={"poll_interval_s": 0.05})
    stop = threading.Event()
    thread = threading.Thread(
        target=run_scheduler, args=(settings, stop, InlineExecutor(set())), daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(_job(db_url, j).status == JobStatus.failed for j in (first, second)):
            break
        time.sleep(0.1)
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    errors = {j: _job(db_url, j).error or "" for j in (first, second)}
    assert "budget.trials" in errors[first]
    assert "space" in errors[second] and "no_such_space" in errors[second]
    assert calls["n"] >= 3  # it claimed again after the injected error
    with get_sessionmaker(db_url)() as s:
        left = s.scalars(select(Job).where(Job.status != JobStatus.failed)).all()
    assert left == []


def test_supervisor_restarts_a_dying_child_with_bounded_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "starts"
    child = f"open({str(marker)!r}, 'a').write('x'); raise SystemExit(3)"
    with caplog.at_level("INFO", logger="service.supervise"):
        sup = Supervisor(
            [sys.executable, "-c", child],
            env={},
            min_delay_s=0.05,
            max_delay_s=0.2,
            stable_s=30,
        )
        deadline = time.monotonic() + 30
        while sup.restarts < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        sup.stop()
    assert sup.restarts >= 4 and len(marker.read_text()) >= 4
    assert "exited with 3" in caplog.text and "restarting in 0.1 s" in caplog.text
    # doubling from the minimum, capped: 0.05, 0.1, 0.2, 0.2, ...
    assert sup.delays[:4] == pytest.approx([0.05, 0.1, 0.2, 0.2])


def test_supervisor_stops_its_child(tmp_path: Path) -> None:
    sup = Supervisor([sys.executable, "-c", "import time; time.sleep(600)"], env={})
    pid = sup.child.pid
    sup.stop(timeout_s=10)
    assert sup.child.poll() is not None and sup.restarts == 0 and pid == sup.child.pid
