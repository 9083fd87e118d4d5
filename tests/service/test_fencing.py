"""Fencing and conditional transitions on SQLite and PostgreSQL: a claim's generation, a
scheduler that lost its lease writes nothing, lease age judged by the database's clock, and
cancel / extend / finish that never overwrite a state someone else moved the job to."""

from __future__ import annotations

from datetime import timedelta

import optuna
import pytest
from sqlalchemy import select

from service.db import accounts, crud
from service.db.clock import db_now
from service.db.models import Job, JobStatus, Trial, TrialState
from service.db.queue import claim_job, finish_job, heartbeat
from service.db.session import get_sessionmaker
from service.scheduler.fence import Fence, LeaseLost
from service.scheduler.records import TrialRecords
from service.scheduler.study import open_study, resume_seed
from service.schemas import JobSpec

SPEC = {
    "dataset": "digits",
    "space": "mlp_small",
    "profiles": ["x86/local"],
    "budget": {"trials": 2},
}


def _job(url: str) -> int:
    with get_sessionmaker(url)() as s:
        job = crud.create_job(
            session=s,
            job_in=JobSpec.model_validate(SPEC),
            owner_id=accounts.admin_user(session=s).id,
        )
        return job.id


def _claim(url: str, worker: str, stale_after_s: float = 60) -> Job:
    with get_sessionmaker(url)() as s:
        job = claim_job(session=s, worker_id=worker, stale_after_s=stale_after_s)
    assert job is not None
    return job


def _age(url: str, job_id: int, seconds: float) -> None:
    """Make the job's heartbeat ``seconds`` old by the database's clock."""
    with get_sessionmaker(url)() as s:
        now = s.scalar(select(db_now()))
        assert now is not None
        s.get(Job, job_id).heartbeat_at = now - timedelta(seconds=seconds)  # type: ignore[union-attr]
        s.commit()


def test_each_claim_is_a_new_generation_and_the_old_one_is_fenced(db_url: str) -> None:
    job_id = _job(db_url)
    first = _claim(db_url, "a")
    assert first.lease == 1
    _age(db_url, job_id, 120)  # a stalled: its heartbeat is old
    second = _claim(db_url, "b")
    assert (second.id, second.lease) == (job_id, 2)
    sessions = get_sessionmaker(db_url)
    with sessions() as s:
        assert heartbeat(session=s, job_id=job_id, worker_id="a", lease=1) is None
        assert heartbeat(session=s, job_id=job_id, worker_id="b", lease=2) == JobStatus.running
    stale = Fence(sessions, job_id, "a", 1)
    with pytest.raises(LeaseLost):
        stale.check()
    records = TrialRecords(stale, job_id)
    with pytest.raises(LeaseLost):
        records.create(0, {}, "h")
    with sessions() as s:
        assert s.scalars(select(Trial).where(Trial.job_id == job_id)).all() == []
    # a's late end writes nothing: b's job stays running
    with sessions() as s:
        assert (
            finish_job(
                session=s, job_id=job_id, worker_id="a", lease=1, status=JobStatus.failed, error="x"
            )
            is None
        )
        job = s.get(Job, job_id)
        assert job is not None and job.status == JobStatus.running and job.error is None


def test_heartbeats_are_stamped_and_judged_by_the_database_clock(db_url: str) -> None:
    job_id = _job(db_url)
    _claim(db_url, "a")
    with get_sessionmaker(db_url)() as s:
        heartbeat(session=s, job_id=job_id, worker_id="a", lease=1)
        now = s.scalar(select(db_now()))
        job = s.get(Job, job_id)
        assert job is not None and job.heartbeat_at is not None and now is not None
        assert abs((now - job.heartbeat_at).total_seconds()) < 5
    _age(db_url, job_id, 30)
    with get_sessionmaker(db_url)() as s:
        assert claim_job(session=s, worker_id="b", stale_after_s=60) is None  # 30 s: still held
    _age(db_url, job_id, 90)
    assert _claim(db_url, "b").lease == 2


def test_a_cancel_during_a_graceful_stop_is_not_lost(db_url: str) -> None:
    job_id = _job(db_url)
    _claim(db_url, "a")
    with get_sessionmaker(db_url)() as s:
        job = s.get(Job, job_id)
        assert job is not None and crud.request_cancel(session=s, job=job)
        assert job.status == JobStatus.cancelling
        # the scheduler, stopping, hands the job back to the queue: the cancel wins
        written = finish_job(
            session=s, job_id=job_id, worker_id="a", lease=1, status=JobStatus.queued
        )
        assert written == JobStatus.cancelled
        s.refresh(job)
        assert job.status == JobStatus.cancelled and job.finished_at is not None


def test_a_cancel_racing_a_claim_is_never_overwritten(db_url: str) -> None:
    job_id = _job(db_url)
    sessions = get_sessionmaker(db_url)
    with sessions() as api:
        seen = api.get(Job, job_id)  # the API read it queued ...
        assert seen is not None and seen.status == JobStatus.queued
        _claim(db_url, "a")  # ... a scheduler claims it meanwhile ...
        assert crud.request_cancel(session=api, job=seen)  # ... the cancel still lands
        assert seen.status == JobStatus.cancelling
    with sessions() as s:
        assert heartbeat(session=s, job_id=job_id, worker_id="a", lease=1) == JobStatus.cancelling


def test_extend_only_reopens_an_ended_job(db_url: str) -> None:
    job_id = _job(db_url)
    sessions = get_sessionmaker(db_url)
    with sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None
        with pytest.raises(crud.JobMovedOn):  # queued, not ended
            crud.extend_job(session=s, job=job, trials=1, tune_s=0)
        assert job.status == JobStatus.queued and job.spec["budget"]["trials"] == 2


def test_reconcile_repairs_a_row_left_running_after_tell(db_url: str) -> None:
    job_id = _job(db_url)
    _claim(db_url, "a")
    sessions = get_sessionmaker(db_url)
    records = TrialRecords(Fence(sessions, job_id, "a", None), job_id)
    study = open_study(db_url, job_id, JobSpec.model_validate(SPEC))
    t = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    records.create(t.number, {"c": 1}, "h0")
    metrics = {"accuracy": 0.75, "size_bytes": 10}
    t.set_user_attr("metrics", metrics)
    t.set_user_attr("bundle_dir", "/artifacts/job/trial-00000")
    t.set_user_attr("latency@x86/local", {"median_ms": 0.1})
    study.tell(t, [0.75, 0.1, 10.0][: len(study.directions)])  # ... and the scheduler died
    assert records.reconcile(study) == 1
    with sessions() as s:
        row = crud.get_trial(session=s, job_id=job_id, number=t.number)
        job = s.get(Job, job_id)
        assert row is not None and job is not None
        assert row.state == TrialState.complete and row.bundle_dir.endswith("trial-00000")  # type: ignore[union-attr]
        assert row.metrics == metrics and row.latency == {"x86/local": {"median_ms": 0.1}}
        assert (job.trials_complete, job.best_accuracy) == (1, 0.75)
    assert records.reconcile(study) == 0  # once


def test_a_resumed_sampler_does_not_replay_its_first_draws() -> None:
    assert resume_seed(7, 0) == 7
    assert len({resume_seed(7, n) for n in range(50)}) == 50  # a new stream per history length
    assert resume_seed(7, 12) == resume_seed(7, 12)  # reproducible
