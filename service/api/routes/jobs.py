"""/v1/jobs: submit, list, inspect, cancel, extend; trials, report and Pareto front.

Every job has an owner; another account's job answers 404 (an admin sees all). Submitting
checks what the stored spec cannot: the profiles' devices answer, an uploaded dataset exists and
fits the space, a warm-start source fits; then the account's quotas (403) and submit rate (429),
serialised per account, and the audit log, in one transaction with the new row.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response, status
from pydantic import ValidationError
from sqlalchemy import select

from service.api import submit_checks as checks
from service.api.deps import CurrentUser, SessionDep, SettingsDep, client_of, release
from service.api.errors import conflict, forbidden, invalid, not_found, responses
from service.api.pareto import compared_with, pareto_points
from service.api.progress import job_progress, trial_stage
from service.api.report import job_report
from service.api.routing import ReleasingRoute
from service.db import accounts, crud
from service.db.models import ENDED, Job, JobStatus, Trial, TrialState, User
from service.retention import forget_job_files
from service.schemas import (
    Extend,
    JobPublic,
    JobReport,
    JobSpec,
    JobsPublic,
    ParetoPoint,
    ParetoPublic,
    Progress,
    TrialPublic,
    TrialsPublic,
)
from service.schemas.accounts import USER_NAME
from service.schemas.jobs import TrialStage
from service.schemas.spec import MAX_ID, PRINTABLE
from service.settings import Settings

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=ReleasingRoute)
JobId = Annotated[int, Path(ge=1, le=MAX_ID, description="the job's id")]
Skip = Annotated[int, Query(ge=0, le=MAX_ID)]


def to_public(job: Job, owner: str, progress: Progress | None = None) -> JobPublic:
    """The job as the API shows it; ``progress`` adds running trials' stages and the ETA."""
    return JobPublic(
        id=job.id,
        owner=owner,
        name=job.name,
        status=job.status.value,
        spec=job.spec,
        study_name=job.study_name or f"job-{job.id}",
        progress=progress
        or Progress(
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


def public_job(session: SessionDep, job: Job, settings: Settings | None = None) -> JobPublic:
    """The job with its owner's name (and, given ``settings``, its live progress)."""
    owner = session.get(User, job.owner_id)
    live = job_progress(session, settings, job) if settings is not None else None
    return to_public(job, owner.name if owner is not None else str(job.owner_id), live)


def trial_public(t: Trial, stage: TrialStage | None = None) -> TrialPublic:
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
        stage=stage,
    )


def job_or_404(session: SessionDep, job_id: int, user: User) -> Job:
    job = crud.get_job(session=session, job_id=job_id, user=user)
    if job is None:
        raise not_found(f"job {job_id}")
    return job


# --------------------------------------------------------------------------- submit
@router.post("", status_code=status.HTTP_201_CREATED, responses=responses(403, 404, 409, 429))
def create_job(
    job_in: JobSpec,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
) -> JobPublic:
    """Submit a search job (queued until a scheduler claims it)."""
    checks.int8_paths(job_in)
    checks.reachable(job_in)
    accounts.lock_account(session=session, user_id=user.id)  # no upload is deleted meanwhile
    if job_in.network is not None:
        job_in = checks.network(job_in, session, settings, user)
    elif job_in.dataset.startswith("user/"):
        checks.user_dataset(job_in, settings, user.id)
    if job_in.warm_start_from is not None:
        checks.warm_start(job_in, session, user)
    checks.rate(session, settings, user)
    checks.quotas(session, settings, user, jobs=1, trials=job_in.budget.trials)
    job = crud.create_job(session=session, job_in=job_in, owner_id=user.id, commit=False)
    accounts.audit(
        session=session,
        user=user,
        action="job.submit",
        target=f"job {job.id}",
        detail={"name": job.name, "trials": job_in.budget.trials, "dataset": job_in.dataset},
        client=client_of(request),
    )
    session.commit()
    return to_public(job, user.name)


# ---------------------------------------------------------------------------- read
@router.get("", responses=responses(403))
def list_jobs(
    session: SessionDep,
    user: CurrentUser,
    skip: Skip = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    status: Annotated[list[JobStatus] | None, Query(description="any of these states")] = None,
    name: Annotated[
        str | None, Query(max_length=200, pattern=PRINTABLE, description="names containing this")
    ] = None,
    owner: Annotated[
        str | None, Query(pattern=USER_NAME, description="an account's jobs (admin only)")
    ] = None,
) -> JobsPublic:
    """List your jobs (an admin: every job), newest first, a page at a time."""
    owner_id = None
    if owner is not None:
        if not user.is_admin and owner != user.name:
            raise forbidden("only an admin lists another account's jobs")
        owner_id = session.scalar(select(User.id).where(User.name == owner))
        if owner_id is None:
            return JobsPublic.of([], 0, skip, limit)
    jobs, count = crud.list_jobs(
        session=session,
        user=user,
        skip=skip,
        limit=limit,
        statuses=status or (),
        name=name,
        owner_id=owner_id,
    )
    ids = {j.owner_id for j in jobs}
    rows = session.execute(select(User.id, User.name).where(User.id.in_(ids)))
    owners = dict(rows.tuples().all())  # a list: a Result has keys(), dict() would index it
    data = [to_public(j, owners[j.owner_id]) for j in jobs]
    return JobsPublic.of(data, count, skip, limit)


@router.get("/{job_id}", responses=responses(404))
def get_job(
    job_id: JobId, session: SessionDep, settings: SettingsDep, user: CurrentUser
) -> JobPublic:
    """One job with its progress: counters, each running trial's stage, and an ETA."""
    return public_job(session, job_or_404(session, job_id, user), settings)


# ----------------------------------------------------------------------- lifecycle
@router.post("/{job_id}/cancel", responses=responses(404, 409))
def cancel_job(
    job_id: JobId, request: Request, session: SessionDep, user: CurrentUser
) -> JobPublic:
    """Cancel a job: queued ones at once, running ones after their in-flight trials are stopped."""
    job = job_or_404(session, job_id, user)
    if job.status not in (JobStatus.queued, JobStatus.running, JobStatus.cancelling):
        raise conflict(f"job {job_id} already ended ({job.status.value})")
    accounts.audit(
        session=session,
        user=user,
        action="job.cancel",
        target=f"job {job_id}",
        detail={"status": job.status.value},
        client=client_of(request),
    )
    if not crud.request_cancel(session=session, job=job):  # it ended meanwhile
        raise conflict(f"job {job_id} already ended ({job.status.value})")
    return public_job(session, job)


@router.post("/{job_id}/extend", responses=responses(403, 404, 409, 429))
def extend_job(
    job_id: JobId,
    body: Extend,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
) -> JobPublic:
    """Give an ended job more trials: it is queued again and resumes its study (the sampler
    continues from every trial so far). The grown budget must stay within ``budget``'s bounds."""
    job = job_or_404(session, job_id, user)
    if job.status not in ENDED:
        raise conflict(f"job {job_id} is {job.status.value}: only an ended job can be extended")
    try:
        crud.grown_spec(job, body.trials, body.tune_s)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(err["loc"])
        if loc[:1] != ("budget",):  # the stored spec itself no longer validates
            raise conflict(f"job {job_id}'s spec is not valid any more: {err['msg']}") from None
        field = "tune_s" if loc[-1] == "tune_s" else "trials"
        raise invalid(
            ("body", field),
            f"the job's budget would become {err['input']} {field}: {err['msg']}",
            getattr(body, field),
        ) from None
    accounts.lock_account(session=session, user_id=user.id)
    checks.rate(session, settings, user)
    owner = session.get(User, job.owner_id) or user
    checks.quotas(session, settings, owner, jobs=1, trials=body.trials)
    accounts.audit(
        session=session,
        user=user,
        action="job.extend",
        target=f"job {job_id}",
        detail={"trials": body.trials, "tune_s": body.tune_s},
        client=client_of(request),
    )
    try:
        extended = crud.extend_job(session=session, job=job, trials=body.trials, tune_s=body.tune_s)
    except crud.JobMovedOn as e:  # extended or claimed by another request meanwhile
        raise conflict(str(e)) from None
    return to_public(extended, owner.name)


@router.delete(
    "/{job_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=responses(404, 409),
)
def delete_job(
    job_id: JobId,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
) -> Response:
    """Delete an ended job: its row, its trials, its Optuna study and its own artifacts (model
    bundles). Shared caches (trained parents, probe measurements, tuning records) stay. A job
    queued or running answers 409: cancel it first."""
    job = job_or_404(session, job_id, user)
    waiting = crud.warm_started_from(session=session, job_id=job_id)
    if waiting:
        raise conflict(f"job {job_id} is the warm start of active job(s) {waiting}")
    detail = {"name": job.name, "status": job.status.value, "owner_id": job.owner_id}
    if not crud.delete_ended_job(session=session, job_id=job_id):
        raise conflict(
            f"job {job_id} is {job.status.value}: only an ended job can be deleted (cancel it)"
        )
    accounts.audit(
        session=session,
        user=user,
        action="job.delete",
        target=f"job {job_id}",
        detail=detail,
        client=client_of(request),
    )
    session.commit()
    forget_job_files(settings, job_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ------------------------------------------------------------------------ results
@router.get("/{job_id}/report", responses=responses(404))
def get_report(
    job_id: JobId, session: SessionDep, settings: SettingsDep, user: CurrentUser
) -> JobReport:
    """What the job cost and saved: CPU and device seconds per stage, cache hit rates,
    pre-filter rejections and the training time they saved, trials per node, and the front's
    verification after the job."""
    job_or_404(session, job_id, user)
    return cost_report(session, settings, job_id)


def cost_report(session: SessionDep, settings: Settings, job_id: int) -> JobReport:
    """The job's cost and savings (:func:`service.api.report.job_report`) with its front's
    verification."""
    from service.scheduler.study import load_study

    rows, _ = crud.list_trials(session=session, job_id=job_id, skip=0, limit=1_000_000)
    report = job_report(job_id, rows)
    release(session)
    try:
        report.verification = load_study(settings.database_url, job_id).user_attrs.get(
            "verification"
        )
    except KeyError:  # no study yet (queued)
        pass
    return report


@router.get("/{job_id}/trials", responses=responses(404))
def list_trials(
    job_id: JobId,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
    skip: Skip = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    state: Annotated[list[TrialState] | None, Query(description="any of these states")] = None,
) -> TrialsPublic:
    """The job's trials with metrics, latency stats, timings and errors, a page at a time."""
    job_or_404(session, job_id, user)
    rows, count = crud.list_trials(
        session=session, job_id=job_id, skip=skip, limit=limit, states=state or ()
    )
    data = [
        trial_public(
            t, trial_stage(settings, job_id, t.number) if t.state == TrialState.running else None
        )
        for t in rows
    ]
    return TrialsPublic.of(data, count, skip, limit)


def job_front(job: Job, settings: Settings) -> tuple[Any, Any, list[Any]]:
    """The job's study (None before it has one), how it scores, and its front."""
    from service.scheduler.front import JobScoring, front
    from service.scheduler.study import load_study

    scoring = JobScoring.from_spec(job.spec)
    try:
        study = load_study(settings.database_url, job.id)
    except KeyError:
        return None, scoring, []
    return study, scoring, front(study, scoring)


def _pareto(job: Job, settings: Settings) -> ParetoPublic:
    study, scoring, points = job_front(job, settings)
    if study is None:
        return ParetoPublic(job_id=job.id, metric_names=[], data=[])
    return ParetoPublic(
        job_id=job.id,
        compared_with=compared_with(job.spec),
        metric_names=scoring.metric_names,
        data=pareto_points(points, scoring.metric_names),
        verification=study.user_attrs.get("verification"),
    )


@router.get("/{job_id}/pareto", responses=responses(404))
def get_pareto(
    job_id: JobId, session: SessionDep, settings: SettingsDep, user: CurrentUser
) -> ParetoPublic:
    """Feasible non-dominated trained trials; latency verified from the shipped library after
    the job where it was (accuracy: validation objective; test accuracy beside it)."""
    job = job_or_404(session, job_id, user)
    release(session)
    return _pareto(job, settings)


@router.get("/{job_id}/best", responses=responses(404))
def get_best(
    job_id: JobId,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
    by: Literal["accuracy", "size", "latency"] = "accuracy",
) -> ParetoPoint:
    """The Pareto point that is best by one criterion (highest accuracy, smallest, fastest)."""
    job = job_or_404(session, job_id, user)
    release(session)
    front = _pareto(job, settings).data
    if not front:
        raise not_found(f"job {job_id} has no complete trials yet: a best point")
    if by == "accuracy":
        return max(front, key=lambda p: (p.accuracy, -p.size_bytes))
    if by == "size":
        return min(front, key=lambda p: (p.size_bytes, -p.accuracy))
    return min(front, key=lambda p: (sum(p.latency_ms.values()), -p.accuracy))
