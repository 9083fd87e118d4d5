"""Run one job: Optuna ask/tell in this process, candidates evaluated as Ray tasks.

The controller is the only writer of the job's study and trial rows. It keeps up to
``executor.capacity`` trials in flight, heartbeats the job row (a dead scheduler's job is
reclaimed by another), and stops early when the job is cancelled.
"""

from __future__ import annotations

import logging
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.trial import TrialState as OptunaState

from search_spaces import SpaceContext, get_space
from service.db import crud
from service.db.models import Job, JobStatus, Trial, TrialState, utcnow
from service.db.queue import heartbeat
from service.db.session import get_sessionmaker
from service.scheduler.study import open_study
from service.schemas import JobCreate
from service.settings import Settings
from workers.data import get_dataset
from workers.probe.errors import ProbeTransientError

log = logging.getLogger(__name__)


class Executor(Protocol):
    capacity: int

    def submit(self, candidate: dict[str, Any], spec: dict[str, Any]) -> Any: ...
    def wait(self, handles: list[Any], timeout_s: float) -> list[Any]: ...
    def result(self, handle: Any) -> dict[str, Any]: ...
    def cancel(self, handle: Any) -> None: ...


@dataclass
class _InFlight:
    trial: optuna.trial.Trial
    candidate: dict[str, Any]
    tune_reserved_s: float = 0.0


class JobController:
    def __init__(
        self,
        settings: Settings,
        executor: Executor,
        job_id: int,
        worker_id: str,
        stop: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.stop = stop or threading.Event()
        self.executor = executor
        self.job_id = job_id
        self.worker_id = worker_id
        self.sessions = get_sessionmaker(settings.database_url)
        self.tune_spent_s = 0.0  # MetaSchedule seconds this job's trials spent (budget.tune_s)
        self.tune_reserved_s = 0.0  # ... and what the trials in flight may still spend

    def run(self) -> JobStatus:
        """Run the job to its end; return its final status."""
        with self.sessions() as s:
            job = s.get(Job, self.job_id)
            assert job is not None
            spec = JobCreate.model_validate(job.spec)
            if job.started_at is None:
                job.started_at = utcnow()
            s.commit()
        try:
            status = self._loop(spec)
        except Exception as e:
            log.exception("job %s failed", self.job_id)
            self._finish(JobStatus.failed, error=f"{type(e).__name__}: {e}")
            return JobStatus.failed
        self._finish(status)
        return status

    # ------------------------------------------------------------------ loop
    def _loop(self, spec: JobCreate) -> JobStatus:
        url = self.settings.database_url
        study = open_study(url, self.job_id, spec)
        self._fail_interrupted(study)
        ds = get_dataset(spec.dataset, self.settings.user_data_dir)
        space = get_space(spec.space)(
            SpaceContext(input_shape=ds.input_shape, num_classes=ds.num_classes),
            spec.choices(),
            spec.granularity,
        )
        max_failed = (
            spec.budget.max_failed if spec.budget.max_failed is not None else spec.budget.trials
        )
        in_flight: dict[Any, _InFlight] = {}
        while True:
            complete, failed = self._counts(study)
            # one cheap UPDATE per loop (at most every poll interval while trials run): it keeps
            # our claim alive and is how a cancel request reaches us
            with self.sessions() as s:
                status = heartbeat(session=s, job_id=self.job_id, worker_id=self.worker_id)
            if status is None:
                log.warning("job %s was claimed by another scheduler; stopping", self.job_id)
                self._cancel_all(study, in_flight, "job taken over by another scheduler")
                return JobStatus.running
            if self.stop.is_set():
                log.info("scheduler stopping: job %s goes back to the queue", self.job_id)
                self._cancel_all(study, in_flight, "interrupted: scheduler stopped")
                return JobStatus.queued
            if status == JobStatus.cancelling:
                self._cancel_all(study, in_flight, "job cancelled")
                return JobStatus.cancelled
            if failed > max_failed:
                self._cancel_all(study, in_flight, "job stopped: too many failed trials")
                raise RuntimeError(f"{failed} trials failed (budget.max_failed = {max_failed})")
            while (
                len(in_flight) < self.executor.capacity
                and complete + len(in_flight) < spec.budget.trials
            ):
                self._dispatch(study, space, spec, in_flight)
            if not in_flight:
                return JobStatus.succeeded
            for handle in self.executor.wait(list(in_flight), self.settings.poll_interval_s):
                self._collect(study, spec, in_flight.pop(handle), handle)

    def _dispatch(
        self, study: optuna.Study, space: Any, spec: JobCreate, in_flight: dict[Any, _InFlight]
    ) -> None:
        trial = study.ask()
        try:
            cand = space.sample(trial)
        except (
            Exception
        ) as e:  # a space that cannot build this point: the trial fails, the job goes on
            self._record_new(trial.number, {}, "")
            self._fail(study, trial, f"sampling failed: {type(e).__name__}: {e}")
            return
        candidate = cand.model_dump(mode="json")
        trial.set_user_attr("candidate", candidate)
        trial.set_user_attr("summary", cand.summary())
        trial.set_user_attr("candidate_hash", cand.structural_hash())
        self._record_new(trial.number, candidate, cand.structural_hash())
        bundle = (
            Path(self.settings.artifact_dir).resolve()
            / "jobs"
            / str(self.job_id)
            / f"trial-{trial.number:05d}"
        )
        worker_spec = {
            "dataset": spec.dataset,
            "split_seed": spec.split_seed,
            "user_dir": str(self.settings.user_data_dir),
            "profiles": spec.profiles,
            "bundle_dir": str(bundle),
            "cache_dir": str(Path(self.settings.artifact_dir).resolve() / "parents"),
            "threads": self.settings.worker_threads,
            "recipe": spec.training.model_dump(),
            "tuning_dir": str(Path(self.settings.tuning_dir).resolve()),
            "probe_cache_dir": str(Path(self.settings.probe_cache_dir).resolve()),
            "tune_budget_s": (tune_s := self._reserve_tuning(spec, len(spec.profiles))),
        }
        item = _InFlight(trial, candidate, tune_s * len(spec.profiles))
        in_flight[self.executor.submit(candidate, worker_spec)] = item

    def _reserve_tuning(self, spec: JobCreate, profiles: int) -> float:
        """Tuning seconds a new trial may spend per profile: its share of what the job's
        ``budget.tune_s`` has left after what was spent and what trials in flight hold."""
        left = spec.budget.tune_s - self.tune_spent_s - self.tune_reserved_s
        per_profile = max(0.0, min(self.settings.tune_per_candidate_s, left / profiles))
        self.tune_reserved_s += per_profile * profiles
        return per_profile

    def _collect(self, study: optuna.Study, spec: JobCreate, item: _InFlight, handle: Any) -> None:
        self.tune_reserved_s -= item.tune_reserved_s
        try:
            result = self.executor.result(handle)
        except Exception as e:
            msg = _error_message(e)
            # A device that failed or stayed busy is not the candidate's fault: recorded, but
            # not counted against max_failed.
            kind = "device" if isinstance(e, ProbeTransientError) else "error"
            log.warning("trial %s failed (%s): %s", item.trial.number, kind, msg)
            self._fail(study, item.trial, msg, kind=kind)
            return
        m = result["metrics"]
        values = []
        for name in spec.metric_names():
            if name.startswith("latency_ms@"):
                values.append(float(m["latency_ms"][name.split("@", 1)[1]]))
            else:
                values.append(float(m[name]))
        t = item.trial
        t.set_user_attr("test_accuracy", m["test_accuracy"])
        t.set_user_attr("params", m["params"])
        t.set_user_attr("model_id", f"{self.job_id}-{t.number}")
        t.set_user_attr("timings", result["timings"])
        t.set_user_attr("parent_cache_hit", result["parent_cache_hit"])
        partial = False
        for prof, st in result["latency"].items():
            self.tune_spent_s += float(st.get("tune_s", 0.0))
            partial = partial or bool(st.get("partial"))
            t.set_user_attr(f"latency@{prof}", {k: st.get(k) for k in _LATENCY_ATTRS})
        if any(n.startswith("latency_ms@") for n in spec.metric_names()):
            # A latency from partly untuned code is kept but never final: infeasible for
            # Optuna, so it stays off best_trials (/pareto, /best) and the dashboard's front.
            t.set_constraint("latency_tuned", 1.0 if partial else 0.0)
        study.tell(t, values)
        with self.sessions() as s:
            row = self._row(s, t.number)
            row.state = TrialState.complete
            row.metrics, row.latency, row.timings = m, result["latency"], result["timings"]
            row.bundle_dir = result["bundle_dir"]
            row.finished_at = utcnow()
            job = s.get(Job, self.job_id)
            assert job is not None
            job.trials_complete += 1
            acc = float(m["accuracy"])
            job.best_accuracy = acc if job.best_accuracy is None else max(job.best_accuracy, acc)
            s.commit()

    # ------------------------------------------------------------ bookkeeping
    def _counts(self, study: optuna.Study) -> tuple[int, int]:
        """COMPLETE trials, and FAIL trials that failed by themselves (not cancelled/stopped)."""
        trials = study.get_trials(deepcopy=False, states=(OptunaState.COMPLETE, OptunaState.FAIL))
        complete = sum(1 for t in trials if t.state == OptunaState.COMPLETE)
        failed = sum(1 for t in trials if t.user_attrs.get("fail_kind") == "error")
        return complete, failed

    def _record_new(self, number: int, candidate: dict[str, Any], digest: str) -> None:
        with self.sessions() as s:
            s.add(
                Trial(job_id=self.job_id, number=number, candidate=candidate, candidate_hash=digest)
            )
            s.commit()

    def _row(self, s: Any, number: int) -> Trial:
        row = crud.get_trial(session=s, job_id=self.job_id, number=number)
        assert row is not None
        return row

    def _fail(
        self,
        study: optuna.Study,
        trial: optuna.trial.Trial,
        message: str,
        *,
        cancelled: bool = False,
        kind: str = "error",
    ) -> None:
        """FAIL ``trial``; ``kind`` "error" (the candidate's fault, counted against
        max_failed), "device" (a probe device failed) or, with ``cancelled``, "cancelled"."""
        trial.set_user_attr("error", message[:2000])
        trial.set_user_attr("fail_kind", "cancelled" if cancelled else kind)
        study.tell(trial, state=OptunaState.FAIL)
        with self.sessions() as s:
            row = self._row(s, trial.number)
            row.state = TrialState.cancelled if cancelled else TrialState.failed
            row.error = message
            row.finished_at = utcnow()
            if not cancelled and kind == "error":
                job = s.get(Job, self.job_id)
                assert job is not None
                job.trials_failed += 1
            s.commit()

    def _cancel_all(
        self, study: optuna.Study, in_flight: dict[Any, _InFlight], reason: str
    ) -> None:
        for handle, item in list(in_flight.items()):
            self.executor.cancel(handle)
            self._fail(study, item.trial, reason, cancelled=True)
        in_flight.clear()

    def _fail_interrupted(self, study: optuna.Study) -> None:
        """Trials left RUNNING by a scheduler that died: FAIL them, with the reason."""
        for t in study.get_trials(deepcopy=False, states=(OptunaState.RUNNING,)):
            study._storage.set_trial_user_attr(
                t._trial_id, "error", "interrupted: scheduler restarted"
            )
            study._storage.set_trial_user_attr(t._trial_id, "fail_kind", "interrupted")
            study._storage.set_trial_state_values(t._trial_id, OptunaState.FAIL)
            with self.sessions() as s:
                row = crud.get_trial(session=s, job_id=self.job_id, number=t.number)
                if row is not None:
                    row.state, row.error, row.finished_at = (
                        TrialState.failed,
                        "interrupted: scheduler restarted",
                        utcnow(),
                    )
                s.commit()

    def _finish(self, status: JobStatus, error: str | None = None) -> None:
        if status == JobStatus.running:  # taken over: the other scheduler finishes it
            return
        with self.sessions() as s:
            job = s.get(Job, self.job_id)
            assert job is not None
            job.status = status
            if status == JobStatus.queued:  # released for the next scheduler to resume
                job.worker_id = None
                s.commit()
                return
            job.error = error
            job.finished_at = utcnow()
            s.commit()


_LATENCY_ATTRS = (  # the per-profile probe stats kept as trial user attrs
    "median_ms",
    "iqr_ms",
    "cv",
    "repeat",
    "number",
    "tuning",
    "partial",
    "precision",
    "cache_hit",
    "tune_s",
    "tvm_version",
)


def _error_message(e: BaseException) -> str:
    """The worker's own exception, not Ray's wrapper text."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException):
        tb = "".join(traceback.format_exception_only(type(cause), cause)).strip()
        return tb
    return f"{type(e).__name__}: {e}"
