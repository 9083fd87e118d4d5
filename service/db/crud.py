"""Create/read helpers for jobs and trials (keyword-only, one session each)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db.models import Job, JobStatus, Trial, utcnow
from service.schemas import JobCreate


def create_job(*, session: Session, job_in: JobCreate) -> Job:
    job = Job(name=job_in.name, spec=job_in.model_dump(mode="json"), status=JobStatus.queued)
    session.add(job)
    session.commit()
    session.refresh(job)
    return job


def list_jobs(*, session: Session, skip: int, limit: int) -> tuple[list[Job], int]:
    count = session.scalar(select(func.count()).select_from(Job)) or 0
    jobs = session.scalars(select(Job).order_by(Job.id.desc()).offset(skip).limit(limit)).all()
    return list(jobs), count


def list_trials(*, session: Session, job_id: int, skip: int, limit: int) -> tuple[list[Trial], int]:
    where = Trial.job_id == job_id
    count = session.scalar(select(func.count()).select_from(Trial).where(where)) or 0
    rows = session.scalars(
        select(Trial).where(where).order_by(Trial.number).offset(skip).limit(limit)
    )
    return list(rows.all()), count


def get_trial(*, session: Session, job_id: int, number: int) -> Trial | None:
    return session.scalar(select(Trial).where(Trial.job_id == job_id, Trial.number == number))


def request_cancel(*, session: Session, job: Job) -> Job:
    """Cancel a queued job at once; ask a running one to stop (its scheduler ends it)."""
    if job.status == JobStatus.queued:
        job.status = JobStatus.cancelled
        job.finished_at = utcnow()
    elif job.status == JobStatus.running:
        job.status = JobStatus.cancelling
    session.commit()
    session.refresh(job)
    return job


def extend_job(*, session: Session, job: Job, trials: int, tune_s: float) -> Job:
    """Add ``trials`` COMPLETE trials (and ``tune_s`` tuning seconds) to an ended job's budget
    and queue it again; its study, trials and caches carry over."""
    spec = dict(job.spec)
    budget = dict(spec["budget"])
    budget["trials"] = job.trials_complete + trials
    budget["tune_s"] = float(budget.get("tune_s", 900.0)) + tune_s
    spec["budget"] = budget
    job.spec = spec  # a new dict: JSON columns track assignment, not mutation
    job.status = JobStatus.queued
    job.error = None
    job.finished_at = None
    job.worker_id = None
    session.commit()
    session.refresh(job)
    return job


def update_job(*, session: Session, job_id: int, **values: Any) -> None:
    job = session.get(Job, job_id)
    assert job is not None
    for k, v in values.items():
        setattr(job, k, v)
    session.commit()
