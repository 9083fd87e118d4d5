"""Create/read helpers for jobs and trials (keyword-only, one session each). Reads that take a
``user`` see only that account's rows, unless it is an admin."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, delete, func, select, update
from sqlalchemy.orm import Session

from service.db.models import ACTIVE, ENDED, Job, JobStatus, Trial, TrialState, User, utcnow
from service.schemas import JobSpec


def create_job(*, session: Session, job_in: JobSpec, owner_id: int, commit: bool = True) -> Job:
    job = Job(
        name=job_in.name,
        spec=job_in.model_dump(mode="json"),
        status=JobStatus.queued,
        owner_id=owner_id,
    )
    session.add(job)
    if commit:
        session.commit()
        session.refresh(job)
    else:
        session.flush()
    return job


def _visible(stmt: Select[Any], user: User | None) -> Select[Any]:
    return stmt if user is None or user.is_admin else stmt.where(Job.owner_id == user.id)


def get_job(*, session: Session, job_id: int, user: User | None) -> Job | None:
    """Job ``job_id`` if ``user`` may see it (None: no owner check)."""
    job: Job | None = session.scalar(_visible(select(Job).where(Job.id == job_id), user))
    return job


def list_jobs(
    *,
    session: Session,
    user: User | None,
    skip: int,
    limit: int,
    statuses: Sequence[JobStatus] = (),
    name: str | None = None,
    owner_id: int | None = None,
) -> tuple[list[Job], int]:
    """A page of the jobs ``user`` may see, newest first, filtered by status (any of),
    ``name`` (a case-insensitive substring) and owner."""
    where: list[ColumnElement[bool]] = []
    if statuses:
        where.append(Job.status.in_(list(statuses)))
    if name:
        escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append(Job.name.ilike(f"%{escaped}%", escape="\\"))
    if owner_id is not None:
        where.append(Job.owner_id == owner_id)
    count = session.scalar(_visible(select(func.count()).select_from(Job), user).where(*where))
    jobs = session.scalars(
        _visible(select(Job), user).where(*where).order_by(Job.id.desc()).offset(skip).limit(limit)
    ).all()
    return list(jobs), count or 0


def list_trials(
    *,
    session: Session,
    job_id: int,
    skip: int,
    limit: int,
    states: Sequence[TrialState] = (),
) -> tuple[list[Trial], int]:
    where: list[ColumnElement[bool]] = [Trial.job_id == job_id]
    if states:
        where.append(Trial.state.in_(list(states)))
    count = session.scalar(select(func.count()).select_from(Trial).where(*where)) or 0
    rows = session.scalars(
        select(Trial).where(*where).order_by(Trial.number).offset(skip).limit(limit)
    )
    return list(rows.all()), count


def get_trial(*, session: Session, job_id: int, number: int) -> Trial | None:
    return session.scalar(select(Trial).where(Trial.job_id == job_id, Trial.number == number))


def request_cancel(*, session: Session, job: Job) -> bool:
    """Cancel a queued job at once; ask a running one to stop (its scheduler ends it).

    Conditional statements (``WHERE status = ...``): a cancel racing a claim either cancels the
    queued job or, once it is claimed, asks its scheduler to stop; it is never overwritten.
    Returns False when the job had ended (nothing changed); ``job`` is refreshed either way.
    """
    done = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status == JobStatus.queued)
        .values(status=JobStatus.cancelled, finished_at=utcnow())
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    if done is None:
        done = session.execute(
            update(Job)
            .where(Job.id == job.id, Job.status == JobStatus.running)
            .values(status=JobStatus.cancelling)
            .returning(Job.id)
            .execution_options(synchronize_session=False)
        ).scalar_one_or_none()
    session.commit()
    session.refresh(job)
    return done is not None or job.status == JobStatus.cancelling


def grown_spec(job: Job, trials: int, tune_s: float) -> JobSpec:
    """The job's spec with ``trials`` COMPLETE trials (and ``tune_s`` tuning seconds) added to
    its budget, validated like a submitted one.

    Raises:
        pydantic.ValidationError: the grown budget passes ``budget``'s bounds (loc
            ``budget.trials`` / ``budget.tune_s``), or the stored spec no longer validates.
    """
    budget = dict(job.spec["budget"])
    budget["trials"] = job.trials_complete + trials
    budget["tune_s"] = float(budget.get("tune_s", 900.0)) + tune_s
    return JobSpec.model_validate({**job.spec, "budget": budget})


def extend_job(*, session: Session, job: Job, trials: int, tune_s: float) -> Job:
    """Add ``trials`` COMPLETE trials (and ``tune_s`` tuning seconds) to an ended job's budget
    and queue it again; its study, trials and caches carry over.

    Raises:
        pydantic.ValidationError: see :func:`grown_spec`; nothing is changed then.
    """
    spec = grown_spec(job, trials, tune_s)
    # conditional: a job that a late writer or another request moved on is not reopened
    done = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status.in_(ENDED))
        .values(
            spec=spec.model_dump(mode="json"),
            status=JobStatus.queued,
            error=None,
            finished_at=None,
            worker_id=None,
        )
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    session.commit()
    session.refresh(job)
    if done is None:
        raise JobMovedOn(f"job {job.id} is {job.status.value}: only an ended job can be extended")
    return job


class JobMovedOn(RuntimeError):
    """A conditional transition found the job in another state than the one it requires."""


def update_job(*, session: Session, job_id: int, **values: Any) -> None:
    job = session.get(Job, job_id)
    assert job is not None
    for k, v in values.items():
        setattr(job, k, v)
    session.commit()


def active_jobs_using(*, session: Session, owner_id: int, field: str, value: str) -> list[int]:
    """The account's queued or running jobs whose spec names ``value`` as ``field`` (an upload
    they read: ``dataset`` or ``network``), sorted."""
    ids = session.scalars(
        select(Job.id).where(
            Job.owner_id == owner_id,
            Job.status.in_(ACTIVE),
            Job.spec[field].as_string() == value,
        )
    ).all()
    return sorted(ids)


def warm_started_from(*, session: Session, job_id: int) -> list[int]:
    """Active jobs whose spec warm-starts from job ``job_id`` (they read its study when claimed)."""
    rows = session.execute(select(Job.id, Job.spec).where(Job.status.in_(ACTIVE))).all()
    return [i for i, spec in rows if spec.get("warm_start_from") == job_id]


def delete_ended_job(*, session: Session, job_id: int) -> bool:
    """Delete job ``job_id`` and its trial rows if it has ended, in one conditional statement
    (a job a scheduler claims meanwhile is left alone). Returns whether it was deleted; the
    caller commits."""
    gone = session.execute(
        delete(Job).where(Job.id == job_id, Job.status.in_(ENDED)).returning(Job.id)
    ).scalar_one_or_none()
    if gone is None:
        return False
    session.execute(delete(Trial).where(Trial.job_id == job_id))  # SQLite without FK pragma
    return True
