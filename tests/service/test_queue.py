"""The job queue on SQLite and PostgreSQL: atomic claims, no double claim, stale requeue."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import select

from service.db import accounts
from service.db.models import Job, JobStatus, utcnow
from service.db.queue import claim_job, heartbeat
from service.db.session import get_sessionmaker

SPEC = {"budget": {"trials": 1}}


def _add_jobs(url: str, n: int) -> list[int]:
    with get_sessionmaker(url)() as s:
        owner = accounts.admin_user(session=s).id
        jobs = [Job(spec=SPEC, owner_id=owner) for _ in range(n)]
        s.add_all(jobs)
        s.commit()
        return [j.id for j in jobs]


def test_claims_oldest_first_and_marks_running(db_url: str) -> None:
    ids = _add_jobs(db_url, 3)
    with get_sessionmaker(db_url)() as s:
        job = claim_job(session=s, worker_id="w1", stale_after_s=60)
        assert job is not None and job.id == ids[0]
        assert job.status == JobStatus.running and job.worker_id == "w1" and job.attempts == 1
        assert claim_job(session=s, worker_id="w2", stale_after_s=60).id == ids[1]  # type: ignore[union-attr]


def test_no_job_claimed_twice_under_concurrency(db_url: str) -> None:
    ids = _add_jobs(db_url, 30)
    claimed: list[int] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while True:
            with get_sessionmaker(db_url)() as s:
                job = claim_job(session=s, worker_id=name, stale_after_s=60)
            if job is None:
                return
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(claimed) == ids  # every job exactly once


def test_stale_running_job_is_reclaimed_and_heartbeat_protects(db_url: str) -> None:
    (job_id,) = _add_jobs(db_url, 1)
    sessions = get_sessionmaker(db_url)
    with sessions() as s:
        assert claim_job(session=s, worker_id="dead", stale_after_s=60) is not None
        assert claim_job(session=s, worker_id="other", stale_after_s=60) is None  # fresh heartbeat
        job = s.get(Job, job_id)
        assert job is not None
        job.heartbeat_at = utcnow() - timedelta(seconds=120)
        s.commit()
        again = claim_job(session=s, worker_id="other", stale_after_s=60)
        assert again is not None and again.worker_id == "other" and again.attempts == 2
        assert heartbeat(session=s, job_id=job_id, worker_id="dead") is None  # lost its claim
        assert heartbeat(session=s, job_id=job_id, worker_id="other") == JobStatus.running


def test_cancelled_and_finished_jobs_are_not_claimed(db_url: str) -> None:
    ids = _add_jobs(db_url, 2)
    with get_sessionmaker(db_url)() as s:
        for job in s.scalars(select(Job).where(Job.id.in_(ids))):
            job.status = JobStatus.cancelled if job.id == ids[0] else JobStatus.succeeded
        s.commit()
        assert claim_job(session=s, worker_id="w", stale_after_s=0.001) is None
