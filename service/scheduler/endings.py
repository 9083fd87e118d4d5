"""How a job's run ends or recovers: its tasks abandoned when the lease is lost, the job failed
with its running trials FAILed, in-flight trials cancelled (or re-queued for a graceful stop),
trials resynchronised after a database error, and the conditional end of the claim.

A mixin of :class:`service.scheduler.controller.JobController`, kept apart to keep the loop
readable.
"""

from __future__ import annotations

import logging
from typing import Any

import optuna
from sqlalchemy.exc import DBAPIError

from service.db.models import JobStatus
from service.db.queue import finish_job
from service.scheduler.fence import Fence, LeaseLost
from service.scheduler.records import TrialRecords
from service.scheduler.study import open_study_if_any
from service.settings import Settings

log = logging.getLogger(__name__)


class Endings:
    settings: Settings
    executor: Any
    job_id: int
    worker_id: str
    sessions: Any
    fence: Fence
    records: TrialRecords
    in_flight: dict[Any, Any]

    def _abandon(self) -> None:
        """Cancel our Ray tasks without writing anything (the lease is gone)."""
        for handle in list(self.in_flight):
            try:
                self.executor.cancel(handle)
            except Exception:  # noqa: BLE001 - best effort: the task may have ended
                log.debug("cancel of a task failed", exc_info=True)
        self.in_flight.clear()

    def _fail(self, error: str) -> JobStatus:
        """Fail the job with ``error``: its tasks cancelled, its RUNNING trials FAILed (not
        left RUNNING), the row ended, each as far as the lease and the database allow."""
        in_flight = dict(self.in_flight)
        self._abandon()
        try:
            study = open_study_if_any(self.settings.database_url, self.job_id)
            if study is not None and hasattr(self, "records"):
                for item in in_flight.values():
                    self.records.fail(
                        study, item.trial, f"job failed: {error}"[:2000], kind="cancelled"
                    )
                self.records.fail_interrupted(study, f"job failed: {error}"[:2000])
        except LeaseLost:
            return JobStatus.running
        except Exception:  # the database is away: the next claim reconciles
            log.exception("job %s: could not fail its running trials", self.job_id)
        try:
            return self._finish(JobStatus.failed, error=error)
        except Exception:  # the database is away: the job is reclaimed once it is back
            log.exception("job %s: could not record its failure (%s)", self.job_id, error)
        return JobStatus.failed

    def _resync(self, study: optuna.Study, in_flight: dict[Any, Any]) -> None:
        """After a database error cut a step short: trials RUNNING in the study but no longer
        in flight are FAILed and re-queued once, and the rows reconciled with the study."""
        try:
            keep = frozenset(item.trial.number for item in in_flight.values())
            self.records.fail_interrupted(study, "interrupted: database error", keep=keep)
            self.records.reconcile(study)
        except DBAPIError:
            log.warning("job %s: database still away", self.job_id)

    def _cancel_all(
        self,
        study: optuna.Study,
        in_flight: dict[Any, Any],
        reason: str,
        *,
        rerun: bool = False,
    ) -> None:
        """Cancel the trials in flight; with ``rerun`` (the scheduler stops, the job goes on
        later) each is re-queued with the same parameters first."""
        for handle, item in list(in_flight.items()):
            self.executor.cancel(handle)
            if rerun:
                self.records.requeue(study, item.trial.number, item.trial.params)
            self.records.fail(
                study, item.trial, reason, kind="interrupted" if rerun else "cancelled"
            )
        in_flight.clear()

    def _finish(self, status: JobStatus, error: str | None = None) -> JobStatus:
        """End the job with ``status`` if the claim is still ours (queued: released for the
        next scheduler); a cancel that arrived meanwhile wins. Returns the status the job has
        from us (``running`` when it was no longer ours)."""
        if status == JobStatus.running:  # taken over: the other scheduler finishes it
            return status
        with self.sessions() as s:
            written = finish_job(
                session=s,
                job_id=self.job_id,
                worker_id=self.worker_id,
                lease=self.fence.lease if hasattr(self, "fence") else -1,
                status=status,
                error=error,
            )
        if written is None:
            log.warning(
                "job %s: not ours any more; its end (%s) is not written", self.job_id, status
            )
            return JobStatus.running
        return JobStatus(written)
