"""The service's trial rows beside Optuna's trials: create, finish, fail, re-queue.

Kept apart from the controller's loop: these are the writes that must agree between the two
records of a trial (``hwnas_trials`` and Optuna's), including after a crash.
"""

from __future__ import annotations

import logging
from typing import Any

import optuna
from optuna.trial import TrialState as OptunaState

from service.costs import trial_cost
from service.db import crud
from service.db.models import Job, Trial, TrialState, utcnow

log = logging.getLogger(__name__)


class TrialRecords:
    def __init__(self, sessions: Any, job_id: int) -> None:
        self.sessions = sessions
        self.job_id = job_id

    def create(self, number: int, candidate: dict[str, Any], digest: str) -> None:
        with self.sessions() as s:
            row = crud.get_trial(session=s, job_id=self.job_id, number=number)
            if row is None:
                s.add(
                    Trial(
                        job_id=self.job_id,
                        number=number,
                        candidate=candidate,
                        candidate_hash=digest,
                    )
                )
            s.commit()

    def update(
        self,
        number: int,
        state: TrialState,
        *,
        count_complete: bool = False,
        accuracy: float | None = None,
        **fields: Any,
    ) -> None:
        """Set the row's state and ``fields``; bump the job's counters where asked."""
        with self.sessions() as s:
            row = crud.get_trial(session=s, job_id=self.job_id, number=number)
            assert row is not None
            row.state = state
            for k, v in fields.items():
                setattr(row, k, v)
            if "timings" in fields:
                for k, v in trial_cost(fields["timings"].get("runs", [])).items():
                    setattr(row, k, v)
            if state != TrialState.running:
                row.finished_at = utcnow()
            job = s.get(Job, self.job_id)
            assert job is not None
            if count_complete:
                job.trials_complete += 1
            if accuracy is not None:
                job.best_accuracy = (
                    accuracy if job.best_accuracy is None else max(job.best_accuracy, accuracy)
                )
            s.commit()

    def bundle_dir(self, number: int) -> str | None:
        with self.sessions() as s:
            row = crud.get_trial(session=s, job_id=self.job_id, number=number)
            return row.bundle_dir if row is not None else None

    def set_verified(self, number: int, verified: dict[str, Any]) -> None:
        """Keep a front point's verified latency on its row."""
        with self.sessions() as s:
            row = crud.get_trial(session=s, job_id=self.job_id, number=number)
            if row is not None:
                row.verified = verified
            s.commit()

    def fail(
        self,
        study: optuna.Study,
        trial: optuna.trial.Trial,
        message: str,
        *,
        kind: str = "error",
    ) -> None:
        """FAIL ``trial``; ``kind`` "error" (the candidate's fault, counted against
        max_failed), "device" (a probe device failed), "cancelled" or "interrupted"."""
        trial.set_user_attr("error", message[:2000])
        trial.set_user_attr("fail_kind", kind)
        study.tell(trial, state=OptunaState.FAIL)
        state = TrialState.cancelled if kind == "cancelled" else TrialState.failed
        with self.sessions() as s:
            row = crud.get_trial(session=s, job_id=self.job_id, number=trial.number)
            if row is not None:
                row.state, row.error, row.finished_at = state, message, utcnow()
            if kind == "error":
                job = s.get(Job, self.job_id)
                assert job is not None
                job.trials_failed += 1
            s.commit()

    def requeue(self, study: optuna.Study, number: int, params: dict[str, Any]) -> None:
        """Enqueue a re-run of trial ``number`` with the same parameters, at most once (a
        trial carrying ``retry_of = number`` already exists after a crash between the two
        writes)."""
        done = {t.user_attrs.get("retry_of") for t in study.get_trials(deepcopy=False)}
        if number in done:
            return
        study.enqueue_trial(params, user_attrs={"retry_of": number})

    def fail_interrupted(self, study: optuna.Study, reason: str) -> int:
        """Trials left RUNNING by a scheduler that died: re-queue each with the same
        parameters, then FAIL it with ``reason``. Returns how many."""
        storage = study._storage
        stale = study.get_trials(deepcopy=False, states=(OptunaState.RUNNING,))
        for t in stale:
            self.requeue(study, t.number, t.params)
            storage.set_trial_user_attr(t._trial_id, "error", reason)
            storage.set_trial_user_attr(t._trial_id, "fail_kind", "interrupted")
            storage.set_trial_state_values(t._trial_id, OptunaState.FAIL)
            with self.sessions() as s:
                row = crud.get_trial(session=s, job_id=self.job_id, number=t.number)
                if row is not None:
                    row.state, row.error, row.finished_at = TrialState.failed, reason, utcnow()
                s.commit()
        if stale:
            log.info("job %s: %d interrupted trials re-queued", self.job_id, len(stale))
        return len(stale)
