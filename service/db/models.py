"""ORM models: accounts (users, API tokens), the audit log, and what users own (jobs with their
trials, uploaded datasets and networks). Optuna's tables sit beside these, unlinked."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Enum,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from service.db.base import Base, UTCDateTime

ADMIN_NAME = "admin"  # the account HWNAS_ADMIN_TOKEN acts as (created by migration 0003)


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    cancelling = "cancelling"
    cancelled = "cancelled"
    succeeded = "succeeded"
    failed = "failed"


ACTIVE = (JobStatus.queued, JobStatus.running, JobStatus.cancelling)
ENDED = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class TrialState(enum.StrEnum):
    running = "running"
    complete = "complete"
    failed = "failed"
    cancelled = "cancelled"
    rejected = "rejected"  # the hardware pre-filter: a constraint broken, never trained
    pruned = "pruned"  # successive halving: not promoted past a lower rung


class User(Base):
    """An account. Quotas left None take the service's defaults (``HWNAS_QUOTA_*``)."""

    __tablename__ = "hwnas_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    quota_exempt: Mapped[bool] = mapped_column(Boolean, default=False)
    max_active_jobs: Mapped[int | None] = mapped_column(Integer, default=None)
    max_active_trials: Mapped[int | None] = mapped_column(Integer, default=None)
    max_storage_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class ApiToken(Base):
    """A bearer token: only its SHA-256 is stored (the secret is shown once, at creation)."""

    __tablename__ = "hwnas_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("hwnas_users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100), default="")
    prefix: Mapped[str] = mapped_column(String(16))  # the first characters, to tell tokens apart
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    user: Mapped[User] = relationship()


class AuditEvent(Base):
    """Who did what to which resource. ``user_id`` is kept without a foreign key, so the log
    outlives what it describes."""

    __tablename__ = "hwnas_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    user_id: Mapped[int] = mapped_column(Integer, index=True)
    user_name: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(40), index=True)
    target: Mapped[str] = mapped_column(String(200), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    client: Mapped[str] = mapped_column(String(100), default="")


class Dataset(Base):
    """An uploaded dataset, stored as ``<datasets dir>/<owner id>/<name>.npz``; jobs of its
    owner name it ``user/<name>``."""

    __tablename__ = "hwnas_datasets"
    __table_args__ = (UniqueConstraint("owner_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(
        ForeignKey("hwnas_users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    info: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Network(Base):
    """An uploaded trained model: a torch.export archive stored once per content as
    ``<networks dir>/<digest>.pt2``; ``info`` is its description (input, classes, layer groups,
    normalization). Jobs of its owner name it ``user/<name>``."""

    __tablename__ = "hwnas_networks"
    __table_args__ = (UniqueConstraint("owner_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(
        ForeignKey("hwnas_users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(64))
    digest: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    info: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Job(Base):
    """A search job. Table names are prefixed: Optuna owns `trials`, `studies`... here too."""

    __tablename__ = "hwnas_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("hwnas_users.id"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[JobStatus] = mapped_column(
        Enum(JobStatus, native_enum=False, length=20), default=JobStatus.queued, index=True
    )
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    study_name: Mapped[str | None] = mapped_column(String(200), default=None)
    worker_id: Mapped[str | None] = mapped_column(String(200), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # the claim's generation: each claim adds one, and every write of the job's rows and study
    # is conditioned on the claimant's (service.scheduler.fence)
    lease: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text, default=None)
    trials_complete: Mapped[int] = mapped_column(Integer, default=0)
    trials_failed: Mapped[int] = mapped_column(Integer, default=0)
    best_accuracy: Mapped[float | None] = mapped_column(Float, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    trials: Mapped[list[Trial]] = relationship(
        back_populates="job", cascade="all, delete-orphan", order_by="Trial.number"
    )


class Trial(Base):
    """One evaluated candidate: the service's record beside Optuna's trial of the same number."""

    __tablename__ = "hwnas_trials"
    __table_args__ = (UniqueConstraint("job_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("hwnas_jobs.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    state: Mapped[TrialState] = mapped_column(
        Enum(TrialState, native_enum=False, length=20), default=TrialState.running
    )
    candidate: Mapped[dict[str, Any]] = mapped_column(JSON)
    candidate_hash: Mapped[str] = mapped_column(String(64), index=True)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    latency: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    timings: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    verified: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    bundle_dir: Mapped[str | None] = mapped_column(Text, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # the trial's cost (service.costs.trial_cost of its runs), summed by /metrics
    train_s: Mapped[float | None] = mapped_column(Float, default=None)
    probe_s: Mapped[float | None] = mapped_column(Float, default=None)
    parent_lookups: Mapped[int | None] = mapped_column(Integer, default=None)
    parent_hits: Mapped[int | None] = mapped_column(Integer, default=None)
    probe_lookups: Mapped[int | None] = mapped_column(Integer, default=None)
    probe_hits: Mapped[int | None] = mapped_column(Integer, default=None)
    task_lookups: Mapped[int | None] = mapped_column(Integer, default=None)
    task_hits: Mapped[int | None] = mapped_column(Integer, default=None)

    job: Mapped[Job] = relationship(back_populates="trials")

    @property
    def model_id(self) -> str | None:
        return f"{self.job_id}-{self.number}" if self.bundle_dir else None


class SchedulerPresence(Base):
    """A scheduler process that is (or was) alive, refreshed every few seconds: ``/readyz``
    reads it (and whether its Ray answers)."""

    __tablename__ = "hwnas_schedulers"

    worker_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ray_ok: Mapped[bool] = mapped_column(Boolean, default=False)
    ray_detail: Mapped[str] = mapped_column(Text, default="")
    job_id: Mapped[int | None] = mapped_column(Integer, default=None)
