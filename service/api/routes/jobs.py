"""/v1/jobs: submit, list, inspect, cancel; trials and Pareto front."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query, status

from service.api.deps import SessionDep, SettingsDep
from service.api.pareto import pareto_points
from service.api.report import job_report
from service.db import crud
from service.db.models import Job, JobStatus, Trial
from service.schemas import (
    Extend,
    JobCreate,
    JobPublic,
    JobReport,
    JobsPublic,
    ParetoPoint,
    ParetoPublic,
    Progress,
    TrialPublic,
    TrialsPublic,
)
from service.settings import Settings

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def to_public(job: Job) -> JobPublic:
    return JobPublic(
        id=job.id,
        name=job.name,
        status=job.status.value,
        spec=job.spec,
        study_name=job.study_name or f"job-{job.id}",
        progress=Progress(
            trials_complete=job.trials_complete,
            trials_failed=job.trials_failed,
            budget=int(job.spec["budget"]["trials"]),
            best_accuracy=job.best_accuracy,
        ),
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


def trial_public(t: Trial) -> TrialPublic:
    from search_spaces import Candidate

    summary = Candidate.model_validate(t.candidate).summary() if t.candidate else ""
    return TrialPublic(
        number=t.number,
        state=t.state.value,
        candidate=t.candidate,
        summary=summary,
        metrics=t.metrics,
        latency=t.latency,
        verified=t.verified,
        timings=t.timings,
        error=t.error,
        model_id=t.model_id,
    )


def _job_or_404(session: SessionDep, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise HTTPException(status_code=404, detail=f"job {job_id} not found")
    return job


def _check_user_dataset(job_in: JobCreate, settings: Settings) -> None:
    """Uploaded datasets live in the artifact store: check the name and the space fit here."""
    from fastapi.exceptions import RequestValidationError

    from search_spaces import SpaceContext, get_space
    from workers.data import UnknownDatasetError, get_dataset

    def invalid(field: str, msg: str) -> RequestValidationError:
        return RequestValidationError(
            [{"type": "value_error", "loc": ("body", field), "msg": msg, "input": job_in.dataset}]
        )

    try:
        ds = get_dataset(job_in.dataset, settings.user_data_dir)
    except UnknownDatasetError as e:
        raise invalid("dataset", str(e)) from None
    try:
        get_space(job_in.space).check_context(
            SpaceContext(input_shape=ds.input_shape, num_classes=ds.num_classes)
        )
    except ValueError as e:
        raise invalid("space", str(e)) from None


@router.post("", status_code=status.HTTP_201_CREATED)
def create_job(job_in: JobCreate, session: SessionDep, settings: SettingsDep) -> JobPublic:
    """Submit a search job (queued until a scheduler claims it)."""
    if job_in.dataset.startswith("user/"):
        _check_user_dataset(job_in, settings)
    if job_in.warm_start_from is not None:
        _check_warm_start(job_in, session)
    return to_public(crud.create_job(session=session, job_in=job_in))


def _check_warm_start(job_in: JobCreate, session: SessionDep) -> None:
    """The source of a warm start must exist and have searched the same space."""
    from fastapi.exceptions import RequestValidationError

    source = session.get(Job, job_in.warm_start_from)
    msg = None
    if source is None:
        msg = f"job {job_in.warm_start_from} does not exist"
    elif source.spec.get("space") != job_in.space:
        msg = (
            f"job {source.id} searched space {source.spec.get('space')!r}, this job searches "
            f"{job_in.space!r}: its candidates do not carry over"
        )
    elif source.trials_complete == 0:
        msg = f"job {source.id} has no complete trials to start from"
    if msg is not None:
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("body", "warm_start_from"),
                    "msg": msg,
                    "input": job_in.warm_start_from,
                }
            ]
        )


@router.get("")
def list_jobs(
    session: SessionDep, skip: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=1000)
) -> JobsPublic:
    """List jobs, newest first."""
    jobs, count = crud.list_jobs(session=session, skip=skip, limit=limit)
    return JobsPublic(data=[to_public(j) for j in jobs], count=count)


@router.get("/{job_id}")
def get_job(job_id: int, session: SessionDep) -> JobPublic:
    """One job with its progress."""
    return to_public(_job_or_404(session, job_id))


@router.post("/{job_id}/cancel")
def cancel_job(job_id: int, session: SessionDep) -> JobPublic:
    """Cancel a job: queued ones at once, running ones after their in-flight trials are stopped."""
    job = _job_or_404(session, job_id)
    if job.status not in (JobStatus.queued, JobStatus.running, JobStatus.cancelling):
        raise HTTPException(
            status_code=409, detail=f"job {job_id} already ended ({job.status.value})"
        )
    return to_public(crud.request_cancel(session=session, job=job))


@router.post("/{job_id}/extend")
def extend_job(job_id: int, body: Extend, session: SessionDep) -> JobPublic:
    """Give an ended job more trials: it is queued again and resumes its study (the sampler
    continues from every trial so far)."""
    job = _job_or_404(session, job_id)
    if job.status not in (JobStatus.succeeded, JobStatus.cancelled, JobStatus.failed):
        raise HTTPException(
            status_code=409,
            detail=f"job {job_id} is {job.status.value}: only an ended job can be extended",
        )
    return to_public(
        crud.extend_job(session=session, job=job, trials=body.trials, tune_s=body.tune_s)
    )


@router.get("/{job_id}/report")
def get_report(job_id: int, session: SessionDep, settings: SettingsDep) -> JobReport:
    """What the job cost and saved: CPU and device seconds per stage, cache hit rates,
    pre-filter rejections and the training time they saved, trials per node, and the front's
    verification after the job."""
    from service.scheduler.study import load_study

    _job_or_404(session, job_id)
    rows, _ = crud.list_trials(session=session, job_id=job_id, skip=0, limit=1_000_000)
    report = job_report(job_id, rows)
    try:
        report.verification = load_study(settings.database_url, job_id).user_attrs.get(
            "verification"
        )
    except KeyError:  # no study yet (queued)
        pass
    return report


@router.get("/{job_id}/trials")
def list_trials(
    job_id: int,
    session: SessionDep,
    skip: int = Query(0, ge=0),
    limit: int = Query(1000, ge=1, le=10_000),
) -> TrialsPublic:
    """The job's trials with metrics, latency stats, timings and errors."""
    _job_or_404(session, job_id)
    rows, count = crud.list_trials(session=session, job_id=job_id, skip=skip, limit=limit)
    return TrialsPublic(data=[trial_public(t) for t in rows], count=count)


@router.get("/{job_id}/pareto")
def get_pareto(job_id: int, session: SessionDep, settings: SettingsDep) -> ParetoPublic:
    """Feasible non-dominated trained trials; latency verified from the shipped library after
    the job where it was (accuracy: validation objective; test accuracy beside it)."""
    from service.scheduler.front import JobScoring, front
    from service.scheduler.study import load_study

    job = _job_or_404(session, job_id)
    try:
        study = load_study(settings.database_url, job_id)
    except KeyError:
        return ParetoPublic(job_id=job_id, metric_names=[], data=[])
    scoring = JobScoring.from_spec(job.spec)
    return ParetoPublic(
        job_id=job_id,
        metric_names=scoring.metric_names,
        data=pareto_points(front(study, scoring), scoring.metric_names),
        verification=study.user_attrs.get("verification"),
    )


@router.get("/{job_id}/best")
def get_best(
    job_id: int,
    session: SessionDep,
    settings: SettingsDep,
    by: str = Query("accuracy", pattern="^(accuracy|size|latency)$"),
) -> ParetoPoint:
    """The Pareto point that is best by one criterion (highest accuracy, smallest, fastest)."""
    front = get_pareto(job_id, session, settings).data
    if not front:
        raise HTTPException(status_code=404, detail=f"job {job_id} has no complete trials yet")
    if by == "accuracy":
        return max(front, key=lambda p: (p.accuracy, -p.size_bytes))
    if by == "size":
        return min(front, key=lambda p: (p.size_bytes, -p.accuracy))
    return min(front, key=lambda p: (sum(p.latency_ms.values()), -p.accuracy))
