"""The scheduler process: claim queued jobs and run them, one at a time."""

from __future__ import annotations

import logging
import os
import socket
import threading

from service.db.migrate import upgrade
from service.db.queue import claim_job
from service.db.session import get_sessionmaker
from service.scheduler.controller import JobController
from service.scheduler.executor import RayExecutor
from service.scheduler.study import get_storage
from service.settings import Settings

log = logging.getLogger(__name__)


def run_scheduler(settings: Settings, stop: threading.Event | None = None) -> None:
    """Claim and run jobs until ``stop`` is set (or forever)."""
    stop = stop or threading.Event()
    worker_id = settings.worker_id or f"{socket.gethostname()}:{os.getpid()}"
    upgrade(settings.database_url)
    get_storage(settings.database_url)  # create Optuna's tables once, before any job
    executor = RayExecutor(settings)
    sessions = get_sessionmaker(settings.database_url)
    log.info("scheduler %s ready", worker_id)
    try:
        while not stop.is_set():
            with sessions() as s:
                job = claim_job(
                    session=s, worker_id=worker_id, stale_after_s=settings.heartbeat_timeout_s
                )
            if job is None:
                stop.wait(settings.poll_interval_s)
                continue
            log.info("running job %s", job.id)
            status = JobController(settings, executor, job.id, worker_id, stop).run()
            log.info("job %s ended: %s", job.id, status)
    finally:
        executor.shutdown()  # stops the embedded Ray (its raylet and workers) with us
