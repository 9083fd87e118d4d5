"""After a job: verify its front from the shipped files, then recompute the front with them.

Round by round (at most :data:`MAX_ROUNDS`): compute the front with the verified numbers so far,
send the points not yet verified to a verification task (the worker times each bundle's library
in a fresh process beside its dense parent and the canary, and writes the card), store what
comes back (study user attributes ``verified:<n>``, the trial rows). A point whose verified
latency is slower may leave the front and let another in: that one is verified next round.
The job keeps its claim (heartbeats) while it waits, and stops verifying when cancelled or
taken over. A verification that fails is recorded as such (study attribute ``verification``),
never passed off as verified.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import optuna

from service.db.models import JobStatus
from service.db.queue import heartbeat
from service.scheduler.front import VERIFIED_PREFIX, front
from service.scheduler.results import error_message
from service.scheduler.study import load_study
from service.schemas import JobSpec
from workers.records import VerifyPoint, VerifyRequest

if TYPE_CHECKING:
    from service.scheduler.controller import JobController

log = logging.getLogger(__name__)
MAX_ROUNDS = 3


class FrontVerifier:
    def __init__(self, controller: JobController, spec: JobSpec) -> None:
        self.c = controller
        self.spec = spec

    def run(self, status: JobStatus) -> JobStatus:
        """Verify the front; returns the job's status (``running`` when it was taken over)."""
        study = load_study(self.c.settings.database_url, self.c.job_id)
        t0 = time.perf_counter()
        rounds = points = 0
        for _ in range(MAX_ROUNDS):
            todo = self._unverified(study)
            if not todo:
                break
            rounds += 1
            request = VerifyRequest(
                job_id=self.c.job_id,
                profiles=self.spec.profiles,
                points=todo,
                tuning_dir=self.c.tuning_dir(self.spec),
                probe_cache_dir=str(self.c.settings.probe_cache_dir.resolve()),
                tune_budget_s=self.c.settings.verify_tune_s,
                windows=self.c.settings.verify_windows,
                num_gpus=self.c.gpus(self.spec),
                network=self.c.network,
            )
            handle = self.c.executor.verify(request)
            outcome = self._wait(handle)
            if outcome is not None:
                return outcome
            try:
                result = self.c.executor.verify_result(handle)
            except Exception as e:
                msg = error_message(e)
                log.warning("job %s: verification failed: %s", self.c.job_id, msg)
                with self.c.fence.session():
                    study.set_user_attr("verification", {"status": "failed", "error": msg[:2000]})
                return status
            with self.c.fence.session():  # the study's writes first, then the rows' (fence)
                for vp in result.points:
                    study.set_user_attr(
                        f"{VERIFIED_PREFIX}{vp.number}",
                        vp.model_dump(mode="json", exclude={"number"}),
                    )
                for vp in result.points:
                    self.c.records.set_verified(vp.number, vp.model_dump(mode="json"))
            points += len(result.points)
        left = len(self._unverified(study))
        with self.c.fence.session():
            study.set_user_attr(
                "verification",
                {
                    "status": "done" if not left else "incomplete",
                    "rounds": rounds,
                    "points_verified": points,
                    "front_unverified": left,
                    "seconds": round(time.perf_counter() - t0, 2),
                },
            )
        return status

    def _unverified(self, study: optuna.Study) -> list[VerifyPoint]:
        out = []
        for p in front(study, self.c.scoring):
            missing = set(self.spec.profiles) - set(p.verified)
            bundle = self.c.records.bundle_dir(p.trial.number)
            if missing and bundle:
                cand: dict[str, Any] = p.trial.user_attrs["candidate"]
                out.append(VerifyPoint(number=p.trial.number, candidate=cand, bundle_dir=bundle))  # type: ignore[arg-type]
        return out

    def _wait(self, handle: Any) -> JobStatus | None:
        """Wait for ``handle``, heartbeating; a status when the job must stop instead."""
        while not self.c.executor.wait([handle], self.c.settings.poll_interval_s):
            with self.c.sessions() as s:
                now = heartbeat(
                    session=s, job_id=self.c.job_id, worker_id=self.c.worker_id, lease=self.c.lease
                )
            if now is None:
                self.c.executor.cancel(handle)
                return JobStatus.running  # taken over: the new owner finishes the job
            if self.c.stop.is_set() or now == JobStatus.cancelling:
                self.c.executor.cancel(handle)
                return JobStatus.queued if self.c.stop.is_set() else JobStatus.cancelled
        return None
