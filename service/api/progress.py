"""What a job is doing now: the stage of each running trial (from the progress files its
workers write, :mod:`workers.progress`) and when the trial budget will be met."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import Job, JobStatus, Trial, TrialState, utcnow
from service.schemas.jobs import Progress, TrialStage
from service.settings import Settings
from workers import progress


def trial_stage(settings: Settings, job_id: int, number: int) -> TrialStage | None:
    body = progress.read(settings.progress_file(job_id, number))
    if body is None:
        return None
    return TrialStage(
        trial=number,
        stage=str(body.get("stage", "")),
        step=body.get("step"),
        steps=body.get("steps"),
        text=str(body.get("text", "")),
        at=datetime.fromtimestamp(float(body.get("at", 0.0)), UTC),
    )


def job_progress(session: Session, settings: Settings, job: Job) -> Progress:
    """The job's counters, its running trials' stages and its ETA."""
    budget = int(job.spec["budget"]["trials"])
    running: list[TrialStage] = []
    if job.status in (JobStatus.running, JobStatus.cancelling):
        numbers = session.scalars(
            select(Trial.number)
            .where(Trial.job_id == job.id, Trial.state == TrialState.running)
            .order_by(Trial.number)
        ).all()
        for n in numbers:
            stage = trial_stage(settings, job.id, n)
            running.append(
                stage or TrialStage(trial=n, stage="dispatched", text="dispatched", at=utcnow())
            )
    eta_s = _eta_s(session, job, budget)
    return Progress(
        trials_complete=job.trials_complete,
        trials_failed=job.trials_failed,
        budget=budget,
        best_accuracy=job.best_accuracy,
        trials_running=running,
        eta_s=eta_s,
        eta=utcnow() + timedelta(seconds=eta_s) if eta_s is not None else None,
    )


RECENT = 10  # the pace is that of the last few complete trials (an extended job's old ones
# finished long ago)


def _eta_s(session: Session, job: Job, budget: int) -> float | None:
    if job.status != JobStatus.running or job.trials_complete == 0:
        return None
    recent = (
        session.execute(
            select(Trial.started_at)
            .where(Trial.job_id == job.id, Trial.state == TrialState.complete)
            .order_by(Trial.finished_at.desc())
            .limit(RECENT)
        )
        .scalars()
        .all()
    )
    if not recent:
        return None
    elapsed = (utcnow() - min(recent)).total_seconds()
    if elapsed <= 0:
        return None
    rate = len(recent) / elapsed  # complete trials per second, trials in parallel included
    return float(math.ceil(max(0, budget - job.trials_complete) / rate))
