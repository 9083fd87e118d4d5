"""The job queue: claim a job with one atomic statement, heartbeat it, requeue stale ones.

Every claim adds one to the job's ``lease`` (its generation); the heartbeat, and every write the
claimant makes (service.scheduler.fence), is conditioned on that generation, so a scheduler that
stalled past ``stale_after_s`` and lost the job finds out before it writes anything. Staleness
is judged by the database server's clock (service.db.clock), never by a host's.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, case, or_, select, update
from sqlalchemy.orm import Session

from service.db.clock import db_now, db_now_minus
from service.db.models import Job, JobStatus


def claim_job(*, session: Session, worker_id: str, stale_after_s: float) -> Job | None:
    """Claim the oldest claimable job for ``worker_id``, or return None.

    Claimable: queued, or running/cancelling with a heartbeat older than ``stale_after_s`` (its
    scheduler died). One ``UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``
    statement, so two schedulers never claim the same job (SQLite drops FOR UPDATE, where the
    single statement is still atomic).
    """
    stale = db_now_minus(stale_after_s)
    claimable = or_(
        Job.status == JobStatus.queued,
        and_(
            Job.status.in_([JobStatus.running, JobStatus.cancelling]),
            or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < stale),
        ),
    )
    pick = (
        select(Job.id)
        .where(claimable)
        .order_by(Job.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    stmt = (
        update(Job)
        .where(Job.id == pick, claimable)
        .values(
            status=_resumed_status(),
            worker_id=worker_id,
            heartbeat_at=db_now(),
            attempts=Job.attempts + 1,
            lease=Job.lease + 1,
        )
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    )
    job_id = session.execute(stmt).scalar_one_or_none()
    session.commit()
    return session.get(Job, job_id, populate_existing=True) if job_id is not None else None


def _resumed_status() -> Any:
    # a job that was being cancelled stays cancelling, so the new owner finishes the cancel
    return case((Job.status == JobStatus.cancelling, JobStatus.cancelling), else_=JobStatus.running)


def heartbeat(
    *, session: Session, job_id: int, worker_id: str, lease: int | None = None
) -> JobStatus | None:
    """Refresh our claim (of generation ``lease``); return the job's status, or None when the
    claim is ours no more (another scheduler took the job, or it was released)."""
    fence = [Job.id == job_id, Job.worker_id == worker_id]
    if lease is not None:
        fence.append(Job.lease == lease)
    result = session.execute(
        update(Job).where(*fence).values(heartbeat_at=db_now()).returning(Job.status)
    ).scalar_one_or_none()
    session.commit()
    return result


def finish_job(
    *,
    session: Session,
    job_id: int,
    worker_id: str,
    lease: int,
    status: JobStatus,
    error: str | None = None,
) -> JobStatus | None:
    """End our claim of job ``job_id`` with ``status``, in one conditional statement.

    Only the claimant of generation ``lease`` of a job still running or cancelling writes: a
    late writer never reopens or overwrites a job another scheduler (or the API) moved on. A
    cancel that arrived meanwhile is never lost: a job that would succeed or go back to the
    queue (a graceful stop) ends ``cancelled`` instead. Returns the status written, or None
    when the claim was no longer ours.
    """
    claim = (
        Job.id == job_id,
        Job.worker_id == worker_id,
        Job.lease == lease,
        Job.status.in_([JobStatus.running, JobStatus.cancelling]),
    )
    if status in (JobStatus.succeeded, JobStatus.queued):
        new: Any = case((Job.status == JobStatus.cancelling, JobStatus.cancelled), else_=status)
    else:
        new = status
    released = status == JobStatus.queued
    values: dict[str, Any] = {"status": new}
    if released:
        # back in the queue (unless cancelled meanwhile): the next claim resumes it
        values["worker_id"] = case((Job.status == JobStatus.cancelling, Job.worker_id), else_=None)
        values["finished_at"] = case((Job.status == JobStatus.cancelling, db_now()), else_=None)
    else:
        values["error"] = error
        values["finished_at"] = db_now()
    written = session.execute(
        update(Job)
        .where(*claim)
        .values(**values)
        .returning(Job.status)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    session.commit()
    return written
