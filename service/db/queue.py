"""The job queue: claim a job with one atomic statement, heartbeat it, requeue stale ones."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import and_, case, or_, select, update
from sqlalchemy.orm import Session

from service.db.models import Job, JobStatus, utcnow


def claim_job(*, session: Session, worker_id: str, stale_after_s: float) -> Job | None:
    """Claim the oldest claimable job for ``worker_id``, or return None.

    Claimable: queued, or running/cancelling with a heartbeat older than ``stale_after_s`` (its
    scheduler died). One ``UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``
    statement, so two schedulers never claim the same job (SQLite drops FOR UPDATE, where the
    single statement is still atomic).
    """
    now = utcnow()
    stale = now - timedelta(seconds=stale_after_s)
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
            heartbeat_at=now,
            attempts=Job.attempts + 1,
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


def heartbeat(*, session: Session, job_id: int, worker_id: str) -> JobStatus | None:
    """Refresh our claim; return the job's status (None when another worker owns it now)."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker_id == worker_id)
        .values(heartbeat_at=utcnow())
        .returning(Job.status)
    ).scalar_one_or_none()
    session.commit()
    return result
