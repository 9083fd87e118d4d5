"""The service's trial rows beside Optuna's trials: create, finish, fail, re-queue, reconcile.

Kept apart from the controller's loop: these are the writes that must agree between the two
records of a trial (``hwnas_trials`` and Optuna's), including after a crash. Every write runs
inside the job's fence (service.scheduler.fence): a scheduler that lost the job's lease writes
nothing. The complete count is recounted from the rows at every write, and claiming a job
recounts every counter from the rows and the study, so a crash between two writes cannot leave
them one short.
"""

from __future__ import annotations

import logging
from typing import Any

import optuna
from optuna.trial import TrialState as OptunaState
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.costs import trial_cost
from service.db import crud
from service.db.models import Job, Trial, TrialState, utcnow
from service.scheduler.fence import Fence

log = logging.getLogger(__name__)

COUNTED_FAILURES = ("error", "deadline")  # fail kinds counted against budget.max_failed


class TrialRecords:
    def __init__(self, fence: Fence, job_id: int) -> None:
        self.fence = fence
        self.sessions = fence.sessions
        self.job_id = job_id

    def create(self, number: int, candidate: dict[str, Any], digest: str) -> None:
        with self.fence.session() as s:
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

    def update(self, number: int, state: TrialState, **fields: Any) -> None:
        """Set the row's state and ``fields``; recount the job's counters."""
        with self.fence.session() as s:
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
            s.flush()
            job = s.get(Job, self.job_id)
            assert job is not None
            job.trials_complete = self._count(s, TrialState.complete)
            accuracy = (row.metrics or {}).get("accuracy") if state == TrialState.complete else None
            if accuracy is not None:
                best = job.best_accuracy
                job.best_accuracy = accuracy if best is None else max(best, float(accuracy))

    def counts(self) -> tuple[int, int, int]:
        """Trained COMPLETE trials, failures counted against ``max_failed`` and pre-filter
        rejections, from the job's counters and rows (kept with the study in the same fenced
        writes, recounted by :meth:`reconcile`): one read per loop turn, where the study's
        own count re-read every trial in flight."""
        with self.sessions() as s:
            job = s.get(Job, self.job_id)
            assert job is not None
            return job.trials_complete, job.trials_failed, self._count(s, TrialState.rejected)

    def bundle_dir(self, number: int) -> str | None:
        with self.sessions() as s:
            row = crud.get_trial(session=s, job_id=self.job_id, number=number)
            return row.bundle_dir if row is not None else None

    def set_verified(self, number: int, verified: dict[str, Any]) -> None:
        """Keep a front point's verified latency on its row."""
        with self.fence.session() as s:
            row = crud.get_trial(session=s, job_id=self.job_id, number=number)
            if row is not None:
                row.verified = verified

    def fail(
        self,
        study: optuna.Study,
        trial: optuna.trial.Trial,
        message: str,
        *,
        kind: str = "error",
    ) -> None:
        """FAIL ``trial``; ``kind`` "error" (the candidate's fault, counted against
        max_failed), "deadline" (ran past its deadline, counted too), "device" (a probe device
        failed), "cancelled" or "interrupted"."""
        with self.fence.session() as s:
            trial.set_user_attr("error", message[:2000])
            trial.set_user_attr("fail_kind", kind)
            study.tell(trial, state=OptunaState.FAIL)
            self._fail_row(s, trial.number, message, kind)

    def _fail_row(self, s: Session, number: int, message: str, kind: str) -> None:
        state = TrialState.cancelled if kind == "cancelled" else TrialState.failed
        row = crud.get_trial(session=s, job_id=self.job_id, number=number)
        if row is not None:
            row.state, row.error, row.finished_at = state, message, utcnow()
        job = s.get(Job, self.job_id)
        assert job is not None
        if kind in COUNTED_FAILURES:
            job.trials_failed += 1

    def requeue(self, study: optuna.Study, number: int, params: dict[str, Any]) -> None:
        """Enqueue a re-run of trial ``number`` with the same parameters, at most once (a
        trial carrying ``retry_of = number`` already exists after a crash between the two
        writes)."""
        with self.fence.session():
            done = {t.user_attrs.get("retry_of") for t in study.get_trials(deepcopy=False)}
            if number in done:
                return
            study.enqueue_trial(params, user_attrs={"retry_of": number})

    def fail_interrupted(
        self, study: optuna.Study, reason: str, *, keep: frozenset[int] = frozenset()
    ) -> int:
        """Trials left RUNNING (a scheduler died, a database error cut a write short), except
        those in ``keep`` (still in flight): re-queue each once with the same parameters, then
        FAIL it with ``reason``. Returns how many."""
        storage = study._storage
        stale = [
            t
            for t in study.get_trials(deepcopy=False, states=(OptunaState.RUNNING,))
            if t.number not in keep
        ]
        for t in stale:
            with self.fence.session() as s:
                if t.params:  # a trial that crashed before sampling has nothing to re-run
                    self.requeue(study, t.number, t.params)
                storage.set_trial_user_attr(t._trial_id, "error", reason)
                storage.set_trial_user_attr(t._trial_id, "fail_kind", "interrupted")
                storage.set_trial_state_values(t._trial_id, OptunaState.FAIL)
                self._fail_row(s, t.number, reason, "interrupted")
        if stale:
            log.info("job %s: %d interrupted trials re-queued", self.job_id, len(stale))
        return len(stale)

    def reconcile(self, study: optuna.Study) -> int:
        """Make the rows agree with the study after a crash between its write and theirs: a
        trial the study has finished whose row is missing or still running takes the study's
        outcome (a COMPLETE one its metrics, latency and bundle), then the job's counters are
        recounted. Returns how many rows were repaired."""
        finished = study.get_trials(
            deepcopy=False, states=(OptunaState.COMPLETE, OptunaState.PRUNED, OptunaState.FAIL)
        )
        fixed = 0
        with self.fence.session() as s:
            rows = {
                r.number: r
                for r in s.scalars(select(Trial).where(Trial.job_id == self.job_id)).all()
            }
            for t in finished:
                row = rows.get(t.number)
                if row is not None and row.state != TrialState.running:
                    continue
                if row is None:
                    if t.user_attrs.get("fail_kind") == "duplicate":
                        continue  # refused proposals never had a row
                    row = Trial(
                        job_id=self.job_id,
                        number=t.number,
                        candidate=t.user_attrs.get("candidate", {}),
                        candidate_hash=t.user_attrs.get("candidate_hash", ""),
                    )
                    s.add(row)
                _outcome(row, t)
                fixed += 1
            s.flush()
            self._recount(s, study)
        if fixed:
            log.warning("job %s: %d trial rows reconciled with the study", self.job_id, fixed)
        return fixed

    def _count(self, s: Session, state: TrialState) -> int:
        """The job's trial rows in ``state``."""
        return (
            s.scalar(
                select(func.count())
                .select_from(Trial)
                .where(Trial.job_id == self.job_id, Trial.state == state)
            )
            or 0
        )

    def _recount(self, s: Session, study: optuna.Study) -> None:
        """The job's counters from its rows and study (after a crash left them apart)."""
        job = s.get(Job, self.job_id)
        assert job is not None
        job.trials_complete = self._count(s, TrialState.complete)
        accs = s.scalars(
            select(Trial.metrics).where(
                Trial.job_id == self.job_id, Trial.state == TrialState.complete
            )
        ).all()
        best = [float(m["accuracy"]) for m in accs if m and m.get("accuracy") is not None]
        job.best_accuracy = max(best) if best else None
        job.trials_failed = sum(
            1
            for t in study.get_trials(deepcopy=False, states=(OptunaState.FAIL,))
            if t.user_attrs.get("fail_kind") in COUNTED_FAILURES
        )


def _outcome(row: Trial, t: optuna.trial.FrozenTrial) -> None:
    """The study's outcome of finished trial ``t``, written to its row."""
    attrs = t.user_attrs
    row.finished_at = t.datetime_complete.astimezone() if t.datetime_complete else utcnow()
    if t.state == OptunaState.FAIL:
        kind = attrs.get("fail_kind", "error")
        row.state = TrialState.cancelled if kind == "cancelled" else TrialState.failed
        row.error = attrs.get("error", "failed")
        return
    row.metrics = attrs.get("metrics")
    row.latency = {
        k.split("@", 1)[1]: v for k, v in attrs.items() if k.startswith("latency@")
    } or None
    if "cost" in attrs:
        row.timings = attrs["cost"]
        for k, v in trial_cost(attrs["cost"].get("runs", [])).items():
            setattr(row, k, v)
    if t.state == OptunaState.PRUNED:
        row.state = TrialState.pruned
    elif attrs.get("prefiltered"):
        row.state = TrialState.rejected
        row.error = "pre-filter: " + "; ".join(
            f"{k!r} broken by {v:.0%}" for k, v in attrs.get("violations", {}).items()
        )
    else:
        row.state = TrialState.complete
        row.bundle_dir = attrs.get("bundle_dir")
