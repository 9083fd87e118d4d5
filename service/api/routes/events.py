"""GET /v1/jobs/{id}/events: a server-sent event stream of a job and its trials.

Events (``event:`` name, ``data:`` one JSON object):

- ``job``: the job as ``GET /v1/jobs/{id}`` shows it, when its status or counters change;
- ``trial``: ``{trial, state, stage}`` when a trial starts, moves to another stage or ends;
- ``end``: the job has ended (the stream closes after it).

The stream closes after ``max_s`` seconds (0: the current state, then close); a client that
wants more reconnects (an EventSource does so by itself). A comment line keeps an idle
connection open every 15 s.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from service.api.deps import CurrentUser, SessionDep, SettingsDep
from service.api.errors import responses
from service.api.progress import job_progress, trial_stage
from service.api.routes.jobs import JobId, job_or_404, to_public
from service.api.routing import ReleasingRoute
from service.db.models import ENDED, Job, Trial, TrialState, User
from service.db.session import get_sessionmaker
from service.settings import Settings

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=ReleasingRoute)
POLL_S = 1.0
KEEPALIVE_S = 15.0
_STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "text/event-stream: `job`, `trial` and `end` events (module docs)",
        "content": {
            "text/event-stream": {
                "schema": {  # one event (OpenAPI 3.1: the schema of a stream's items)
                    "type": "object",
                    "required": ["event", "data"],
                    "properties": {
                        "event": {"type": "string", "enum": ["job", "trial", "end"]},
                        "id": {"type": "string", "pattern": "^[0-9]+$"},
                        "data": {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "description": "job: the job as GET /v1/jobs/{id} shows it; trial: "
                            "{trial, state, stage}; end: {id, status}",
                        },
                    },
                }
            }
        },
    }
}


def _snapshot(settings: Settings, job_id: int) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """The job as JSON and each trial's state and stage, read now."""
    with get_sessionmaker(settings.database_url)() as s:
        job = s.get(Job, job_id)
        if job is None:  # deleted meanwhile
            return {"id": job_id, "status": "deleted"}, {}
        owner = s.get(User, job.owner_id)
        public = to_public(job, owner.name if owner else "", job_progress(s, settings, job))
        trials: dict[int, dict[str, Any]] = {}
        for number, state in s.execute(
            select(Trial.number, Trial.state).where(Trial.job_id == job_id)
        ).tuples():
            stage = trial_stage(settings, job_id, number) if state == TrialState.running else None
            trials[number] = {
                "trial": number,
                "state": state.value,
                "stage": stage.text if stage else None,
            }
    body = public.model_dump(mode="json")
    body["progress"].pop("eta", None)  # changes every second; eta_s says it
    return body, trials


def _event(name: str, data: dict[str, Any], seq: int) -> str:
    return f"id: {seq}\nevent: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _stream(
    request: Request, settings: Settings, job_id: int, max_s: float
) -> AsyncIterator[str]:
    deadline = time.monotonic() + max_s
    last_job: dict[str, Any] | None = None
    last_trials: dict[int, dict[str, Any]] = {}
    seq, quiet_since = 0, time.monotonic()
    while True:
        job, trials = await run_in_threadpool(_snapshot, settings, job_id)
        sent = False
        if job != last_job:
            seq += 1
            yield _event("job", job, seq)
            last_job, sent = job, True
        for number, t in sorted(trials.items()):
            if last_trials.get(number) != t:
                seq += 1
                yield _event("trial", t, seq)
                sent = True
        last_trials = trials
        if job["status"] in (*ENDED, "deleted"):
            seq += 1
            yield _event("end", {"id": job_id, "status": job["status"]}, seq)
            return
        now = time.monotonic()
        if now >= deadline or await request.is_disconnected():
            return
        if sent:
            quiet_since = now
        elif now - quiet_since >= KEEPALIVE_S:
            yield ": keep-alive\n\n"
            quiet_since = now
        await asyncio.sleep(min(POLL_S, max(0.0, deadline - now)))


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={**_STREAM, **responses(404, json_route=False)},
)
def job_events(
    job_id: JobId,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
    max_s: Annotated[
        float, Query(ge=0, le=3600, description="close the stream after this many seconds")
    ] = 600,
) -> StreamingResponse:
    """A job's events as they happen (server-sent events), until it ends or ``max_s`` passes."""
    job_or_404(session, job_id, user)
    return StreamingResponse(
        _stream(request, settings, job_id, max_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
