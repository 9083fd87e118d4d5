"""A live hwnas API on 127.0.0.1 with one finished job, for tests of the remote CLI.

:func:`finished_job_service` runs one small real job (digits, ``mlp_small``) to its end in this
process through the controller, as an ordinary account, then serves the app with uvicorn in a
thread. :func:`run_cli` runs ``python -m service.cli`` as a subprocess against it, the way a
user runs ``hwnas``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from service.db.models import JobStatus
from service.db.queue import claim_job
from service.db.session import get_sessionmaker
from service.scheduler.controller import JobController
from tests.service.api import admin_client, api_settings, live_server, new_user
from tests.service.inline import InlineExecutor

ROOT = Path(__file__).resolve().parents[2]
SPEC: dict[str, Any] = {
    "name": "cli-job",
    "dataset": "digits",
    "space": "mlp_small",
    "space_overrides": {"depth": [1], "width": [16, 32]},
    "profiles": ["x86/local"],
    "objectives": ["accuracy", "latency@x86/local", "size"],
    "budget": {"trials": 3, "tune_s": 0},
    "training": {"epochs": 1, "finetune_epochs": 1},
    "tuning": "off",
    "prefilter": False,
    "seed": 3,
}


@contextmanager
def finished_job_service(
    tmp: Path, spec: dict[str, Any] | None = None, **settings_overrides: Any
) -> Iterator[dict[str, Any]]:
    """Serve an app whose account ``viewer`` has one succeeded job.

    Yields:
        ``url``, ``token`` (the viewer's), ``user_id``, ``job_id``, ``settings`` and ``tmp``.
    """
    url = f"sqlite:///{tmp / 'hwnas.db'}"
    settings = api_settings(url, tmp, **{"poll_interval_s": 0.01, **settings_overrides})
    with admin_client(settings) as admin:
        user_id, token = new_user(admin, "viewer")
        r = admin.post("/v1/jobs", json=spec or SPEC, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 201, r.text
        job_id = int(r.json()["id"])
    with get_sessionmaker(url)() as s:
        assert claim_job(session=s, worker_id="t", stale_after_s=60) is not None
    status = JobController(settings, InlineExecutor(set()), job_id, "t").run()
    assert status == JobStatus.succeeded
    with live_server(settings) as base:
        yield {
            "url": base,
            "token": token,
            "user_id": user_id,
            "job_id": job_id,
            "settings": settings,
            "tmp": tmp,
        }


def cli_env(service: dict[str, Any] | None = None, **extra: str) -> dict[str, str]:
    """The environment ``hwnas`` runs in: ``HWNAS_URL`` / ``HWNAS_TOKEN`` of ``service``, and
    none of the caller's own ``HWNAS_*`` client settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HWNAS_URL", "HWNAS_TOKEN", "HWNAS_TOKEN_FILE", "COLUMNS", "FORCE_COLOR")
    }
    if service is not None:
        env |= {"HWNAS_URL": service["url"], "HWNAS_TOKEN": service["token"]}
    return env | extra


def run_cli(
    service: dict[str, Any] | None,
    *argv: str,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``hwnas ARGV...`` as a subprocess (stdout and stderr captured: not terminals)."""
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *argv],
        cwd=cwd,
        env=env if env is not None else cli_env(service),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
