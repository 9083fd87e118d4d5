"""/v1/jobs/{id}/report.html and report.png: the job's report for people to look at (plain
``def`` routes: FastAPI runs them, plotting included, off the event loop)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import HTMLResponse

from service.api.deps import CurrentUser, SessionDep, SettingsDep, release
from service.api.errors import responses
from service.api.pareto import pareto_points
from service.api.report_page import front_png, report_html
from service.api.routes.jobs import JobId, cost_report, job_front, job_or_404, public_job
from service.api.routing import ReleasingRoute

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=ReleasingRoute)
_PNG: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the Pareto front per objective pair",
        "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
    }
}
_HTML: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the report page (self-contained: the plot inlined, no scripts)",
        "content": {"text/html": {"schema": {"type": "string"}}},
    }
}


@router.get(
    "/{job_id}/report.png",
    response_class=Response,
    responses={**_PNG, **responses(404, json_route=False)},
)
def report_png(
    job_id: JobId, session: SessionDep, settings: SettingsDep, user: CurrentUser
) -> Response:
    """The job's Pareto front per objective pair as a PNG (infeasible points marked)."""
    job = job_or_404(session, job_id, user)
    release(session)
    study, scoring, points = job_front(job, settings)
    return Response(front_png(study, scoring, points), media_type="image/png")


@router.get(
    "/{job_id}/report.html",
    response_class=HTMLResponse,
    responses={**_HTML, **responses(404, json_route=False)},
)
def report_page(
    job_id: JobId, session: SessionDep, settings: SettingsDep, user: CurrentUser
) -> HTMLResponse:
    """The job's report: the front per objective pair, its points, cost and cache figures."""
    job = job_or_404(session, job_id, user)
    release(session)
    study, scoring, points = job_front(job, settings)
    table = [p.model_dump(mode="json") for p in pareto_points(points, scoring.metric_names)]
    page = report_html(
        public_job(session, job, settings).model_dump(mode="json"),
        table,
        cost_report(session, settings, job_id),
        front_png(study, scoring, points),
    )
    return HTMLResponse(page)
