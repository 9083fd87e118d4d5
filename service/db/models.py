"""ORM models: jobs and their trials (Optuna's tables sit beside these, unlinked)."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from service.db.base import Base


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    cancelling = "cancelling"
    cancelled = "cancelled"
    succeeded = "succeeded"
    failed = "failed"


class TrialState(enum.StrEnum):
    running = "running"
    complete = "complete"
    failed = "failed"
    cancelled = "cancelled"
    rejected = "rejected"  # the hardware pre-filter: a constraint broken, never trained
    pruned = "pruned"  # successive halving: not promoted past a lower rung


class Job(Base):
    """A search job. Table names are prefixed: Optuna owns `trials`, `studies`... here too."""

    __tablename__ = "hwnas_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[JobStatus] = mapped_column(
        Enum(JobStatus, native_enum=False, length=20), default=JobStatus.queued, index=True
    )
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    study_name: Mapped[str | None] = mapped_column(String(200), default=None)
    worker_id: Mapped[str | None] = mapped_column(String(200), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    trials_complete: Mapped[int] = mapped_column(Integer, default=0)
    trials_failed: Mapped[int] = mapped_column(Integer, default=0)
    best_accuracy: Mapped[float | None] = mapped_column(Float, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)

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
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)

    job: Mapped[Job] = relationship(back_populates="trials")

    @property
    def model_id(self) -> str | None:
        return f"{self.job_id}-{self.number}" if self.bundle_dir else None
