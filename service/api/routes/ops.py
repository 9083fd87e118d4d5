"""/metrics (Prometheus text format, admin token) and /readyz (no token): for operators.

Every figure is read from the service database at scrape time, so it is the same whichever API
replica answers and survives restarts: job and trial counts by state, the queue depth, trials
finished per minute (last 5 minutes), training and probe seconds and cache lookups / hits
summed over trials, and the schedulers that are alive.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from fastapi import APIRouter, Response, status
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field
from sqlalchemy import func, select, text

from service.api.deps import AdminUser, SessionDep, SettingsDep
from service.api.errors import responses
from service.api.routing import ReleasingRoute
from service.db.models import Job, JobStatus, SchedulerPresence, Trial, TrialState, utcnow

router = APIRouter(tags=["operations"], route_class=ReleasingRoute)
RATE_WINDOW_MIN = 5
_COSTS = (
    "train_s",
    "probe_s",
    "parent_lookups",
    "parent_hits",
    "probe_lookups",
    "probe_hits",
    "task_lookups",
    "task_hits",
)


class _Text:
    """Prometheus exposition format, one family at a time."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        self.lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
        self.lines += [f"{name}{labels} {_num(v)}" for labels, v in samples]

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _num(v: float) -> str:
    return repr(float(v)) if isinstance(v, float) else str(v)


_METRICS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Prometheus text exposition format 0.0.4",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={**_METRICS, **responses(403, json_route=False)},
)
def metrics(session: SessionDep, settings: SettingsDep, admin: AdminUser) -> PlainTextResponse:
    """Service metrics in Prometheus format (admin token: they cover every account)."""
    out = _Text()
    jobs = dict(
        session.execute(select(Job.status, func.count()).group_by(Job.status)).tuples().all()
    )
    out.family(
        "hwnas_jobs",
        "gauge",
        "jobs by state",
        [(f'{{state="{s.value}"}}', jobs.get(s, 0)) for s in JobStatus],
    )
    out.family(
        "hwnas_queue_depth",
        "gauge",
        "jobs queued, waiting for a scheduler",
        [("", jobs.get(JobStatus.queued, 0))],
    )
    trials = dict(
        session.execute(select(Trial.state, func.count()).group_by(Trial.state)).tuples().all()
    )
    out.family(
        "hwnas_trials",
        "gauge",
        "trials by state",
        [(f'{{state="{s.value}"}}', trials.get(s, 0)) for s in TrialState],
    )
    since = utcnow() - timedelta(minutes=RATE_WINDOW_MIN)
    recent = (
        session.scalar(
            select(func.count())
            .select_from(Trial)
            .where(Trial.finished_at > since, Trial.state != TrialState.running)
        )
        or 0
    )
    out.family(
        "hwnas_trials_per_minute",
        "gauge",
        f"trials that ended per minute over the last {RATE_WINDOW_MIN} minutes",
        [("", round(recent / RATE_WINDOW_MIN, 3))],
    )
    sums = session.execute(
        select(*(func.coalesce(func.sum(getattr(Trial, c)), 0) for c in _COSTS))
    ).one()
    cost = dict(zip(_COSTS, sums, strict=True))
    out.family(
        "hwnas_training_seconds_total",
        "counter",
        "wall seconds trials spent training (dense parents and fine-tuning)",
        [("", float(cost["train_s"]))],
    )
    out.family(
        "hwnas_probe_seconds_total",
        "counter",
        "wall seconds trials spent in TVM latency probes (pre-filter and after training)",
        [("", float(cost["probe_s"]))],
    )
    caches = {"parent": "parent", "probe": "probe", "tuning_task": "task"}
    out.family(
        "hwnas_cache_lookups_total",
        "counter",
        "cache lookups by cache",
        [(f'{{cache="{k}"}}', int(cost[f"{v}_lookups"])) for k, v in caches.items()],
    )
    out.family(
        "hwnas_cache_hits_total",
        "counter",
        "cache hits by cache",
        [(f'{{cache="{k}"}}', int(cost[f"{v}_hits"])) for k, v in caches.items()],
    )
    out.family(
        "hwnas_cache_hit_ratio",
        "gauge",
        "hits / lookups by cache (0 before any lookup)",
        [
            (
                f'{{cache="{k}"}}',
                round(int(cost[f"{v}_hits"]) / n, 4) if (n := int(cost[f"{v}_lookups"])) else 0.0,
            )
            for k, v in caches.items()
        ],
    )
    alive = _alive(session, settings.heartbeat_timeout_s)
    out.family("hwnas_schedulers_alive", "gauge", "schedulers seen recently", [("", len(alive))])
    out.family(
        "hwnas_schedulers_ray_ok",
        "gauge",
        "live schedulers whose Ray answers",
        [("", sum(1 for s in alive if s.ray_ok))],
    )
    return PlainTextResponse(out.text(), media_type="text/plain; version=0.0.4")


def _alive(session: SessionDep, within_s: float) -> list[SchedulerPresence]:
    since = utcnow() - timedelta(seconds=within_s)
    return list(
        session.scalars(select(SchedulerPresence).where(SchedulerPresence.seen_at > since)).all()
    )


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    database: str
    schedulers: int = Field(description="schedulers seen within HWNAS_HEARTBEAT_TIMEOUT_S")
    schedulers_ray_ok: int = Field(description="... of which Ray answers")
    reasons: list[str]


@router.get(
    "/readyz",
    tags=["health"],
    responses={
        200: {"model": Readiness, "description": "ready"},
        503: {"model": Readiness, "description": "not ready: the reasons are listed"},
    },
)
def readyz(session: SessionDep, settings: SettingsDep) -> Response:
    """Ready to run jobs: the database answers, and a scheduler was seen lately whose Ray
    answers (no token needed)."""
    reasons: list[str] = []
    try:
        session.execute(text("SELECT 1"))
    except Exception as e:  # noqa: BLE001 - the answer is "not ready", with why
        down = Readiness(
            status="not ready",
            database=type(e).__name__,
            schedulers=0,
            schedulers_ray_ok=0,
            reasons=[f"database: {type(e).__name__}"],
        )
        return JSONResponse(down.model_dump(), status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    alive = _alive(session, settings.heartbeat_timeout_s)
    if not alive:
        reasons.append(f"no scheduler seen in the last {settings.heartbeat_timeout_s:g} s")
    elif not any(s.ray_ok for s in alive):
        reasons.append("no live scheduler's Ray answers: " + "; ".join(s.ray_detail for s in alive))
    body = Readiness(
        status="not ready" if reasons else "ready",
        database="ok",
        schedulers=len(alive),
        schedulers_ray_ok=sum(1 for s in alive if s.ray_ok),
        reasons=reasons,
    )
    code = status.HTTP_503_SERVICE_UNAVAILABLE if reasons else status.HTTP_200_OK
    return JSONResponse(body.model_dump(), status_code=code)
