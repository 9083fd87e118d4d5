"""The scheduler process: claim queued jobs and run them, one at a time.

Nothing one job does stops the loop: the controller fails a bad job with its reason, and an
error outside it (the database away while claiming, say) is logged and retried after a
bounded, growing pause.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from service.db.migrate import upgrade
from service.db.queue import claim_job
from service.db.session import get_sessionmaker
from service.scheduler.controller import Executor, JobController
from service.scheduler.executor import RayExecutor
from service.scheduler.presence import Presence
from service.scheduler.study import get_storage
from service.settings import Settings
from workers import faults

log = logging.getLogger(__name__)
MAX_PAUSE_S = 60.0


def run_scheduler(
    settings: Settings, stop: threading.Event | None = None, executor: Executor | None = None
) -> None:
    """Claim and run jobs until ``stop`` is set (or forever), on Ray unless ``executor`` is
    given (tests)."""
    stop = stop or threading.Event()
    worker_id = settings.worker_id or f"{socket.gethostname()}:{os.getpid()}"
    upgrade(settings.database_url)
    get_storage(settings.database_url)  # create Optuna's tables once, before any job
    ray = RayExecutor(settings) if executor is None else None
    executor = executor or ray
    assert executor is not None
    sessions = get_sessionmaker(settings.database_url)
    running: list[int] = []  # the job in hand, for the presence row
    presence = Presence(
        settings.database_url,
        worker_id,
        health=getattr(executor, "health", lambda: (True, "in-process executor")),
        job=lambda: running[0] if running else None,
    )
    gc = _start_gc(settings, stop) if settings.gc_interval_s > 0 else None
    log.info("scheduler %s ready", worker_id)
    pause = settings.poll_interval_s
    try:
        while not stop.is_set():
            try:
                with sessions() as s:
                    job = claim_job(
                        session=s, worker_id=worker_id, stale_after_s=settings.heartbeat_timeout_s
                    )
                if job is None:
                    stop.wait(settings.poll_interval_s)
                    continue
                log.info("running job %s (lease %d)", job.id, job.lease)
                faults.point("claim")
                running[:] = [job.id]
                try:
                    status = JobController(
                        settings, executor, job.id, worker_id, stop, lease=job.lease
                    ).run()
                finally:
                    running.clear()
                log.info("job %s ended: %s", job.id, status)
                pause = settings.poll_interval_s
            except Exception:
                log.exception(
                    "scheduler %s: error outside a job; retrying in %.0f s", worker_id, pause
                )
                stop.wait(pause)
                pause = min(MAX_PAUSE_S, pause * 2)
    finally:
        presence.stop()
        if gc is not None:
            gc.join(timeout=5)
        if ray is not None:
            ray.shutdown()  # stops the embedded Ray (its raylet and workers) with us


def _start_gc(settings: Settings, stop: threading.Event) -> threading.Thread:
    """Collect garbage every ``gc_interval_s`` (service.retention) beside the jobs."""
    from service.retention import collect

    def run() -> None:
        while not stop.wait(settings.gc_interval_s):
            try:
                collect(settings)
            except Exception:
                log.exception("gc failed; trying again in %.0f s", settings.gc_interval_s)

    thread = threading.Thread(target=run, name="gc", daemon=True)
    thread.start()
    return thread
