"""Run one job: Optuna ask/tell in this process, candidates evaluated as Ray tasks.

The controller is the only writer of the job's study and trial rows. It keeps up to
``executor.capacity`` trials in flight, heartbeats the job row (a dead scheduler's job is
reclaimed by another), and stops early when the job is cancelled. Per trial: the hardware
pre-filter (in the worker, before training), successive-halving rungs when the job asks for
them, constraints to Optuna, and re-runs of trials a dead or stopped scheduler left behind.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.trial import TrialState as OptunaState
from pydantic import ValidationError

from hw_profiles import get_profile
from search_spaces import Candidate, HwnasError, SpaceContext, get_space
from service import logctx
from service.db.models import Job, JobStatus, TrialState, utcnow
from service.db.queue import heartbeat
from service.db.session import get_sessionmaker
from service.scheduler.fidelity import Ladder
from service.scheduler.front import JobScoring
from service.scheduler.proposals import Proposer, SamplingError, SpaceExhaustedError
from service.scheduler.records import TrialRecords
from service.scheduler.results import error_message, worker_cause
from service.scheduler.study import open_study, sampler_plan, warm_start
from service.scheduler.verification import FrontVerifier
from service.schemas import JobSpec
from service.settings import Settings
from workers.data import get_dataset
from workers.probe.errors import ProbeTransientError, TuningUnavailableError
from workers.probe.targets import is_gpu
from workers.probe.tuning import require_cost_model
from workers.records import EvalRequest, EvalResult, Metrics, VerifyRequest, VerifyResult
from workers.scoring import Constraint, constraint_values

log = logging.getLogger(__name__)


class DeviceUnreachableError(HwnasError, ConnectionError):
    """A profile's device did not answer when the job was claimed."""


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    return f"{'.'.join(map(str, err['loc'])) or 'spec'}: {err['msg']}"


class Executor(Protocol):
    """Runs evaluations and verifications somewhere (Ray tasks; in-process in tests)."""

    capacity: int

    def capacity_for(self, gpus: float) -> int: ...
    def submit(self, request: EvalRequest) -> Any: ...
    def wait(self, handles: list[Any], timeout_s: float) -> list[Any]: ...
    def result(self, handle: Any) -> EvalResult: ...
    def cancel(self, handle: Any) -> None: ...
    def verify(self, request: VerifyRequest) -> Any: ...
    def verify_result(self, handle: Any) -> VerifyResult: ...


@dataclass
class _InFlight:
    trial: optuna.trial.Trial
    candidate: Candidate
    rung: int
    digest: str = ""
    tune_reserved_s: float = 0.0
    runs: list[dict[str, Any]] = field(default_factory=list)  # cost of each evaluation


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
        self.records = TrialRecords(self.sessions, job_id)
        self.tune_spent_s = 0.0  # MetaSchedule seconds this job's trials spent (budget.tune_s)
        self.tune_reserved_s = 0.0  # ... and what the trials in flight may still spend
        self.constraints: list[Constraint] = []
        self.scoring = JobScoring([], [], [], False)
        self.ladder = Ladder([1.0], 3, [])
        self.proposer: Proposer  # set when the loop starts (it needs the space)
        self.user_dir = settings.user_data_dir  # the owner's uploads, set by run()

    def run(self) -> JobStatus:
        """Run the job to its end; return its final status.

        Whatever is wrong with this one job (a stored spec that no longer validates, a profile
        whose device is gone, a dataset that vanished, an error anywhere in its loop) fails
        the job with the reason; it never escapes to the scheduler, which goes on.
        """
        with logctx.bound(job=self.job_id):
            return self._run()

    def _run(self) -> JobStatus:
        try:
            with self.sessions() as s:
                job = s.get(Job, self.job_id)
                assert job is not None
                self.user_dir = self.settings.datasets_dir(job.owner_id)
                raw_spec = dict(job.spec)
                if job.started_at is None:
                    job.started_at = utcnow()
                s.commit()
            spec = JobSpec.model_validate(raw_spec)
            self._check_devices(spec)
            status = self._loop(spec)
            if status in (JobStatus.succeeded, JobStatus.cancelled) and self.settings.verify:
                status = FrontVerifier(self, spec).run(status)
        except ValidationError as e:
            log.warning("job %s: its stored spec does not validate: %s", self.job_id, e)
            return self._fail(f"the job's spec is not valid: {_first_error(e)}")
        except Exception as e:
            log.exception("job %s failed", self.job_id)
            return self._fail(f"{type(e).__name__}: {e}")
        self._finish(status)
        return status

    def _fail(self, error: str) -> JobStatus:
        try:
            self._finish(JobStatus.failed, error=error)
        except Exception:  # the database is away: the job is reclaimed once it is back
            log.exception("job %s: could not record its failure (%s)", self.job_id, error)
        return JobStatus.failed

    @staticmethod
    def _check_devices(spec: JobSpec) -> None:
        """A profile whose device does not answer fails the job now, with the reason, before
        anything is trained for it."""
        from workers.probe.reach import reachability

        reach = reachability([get_profile(p) for p in spec.profiles])
        down = {p: why for p, (ok, why) in reach.items() if not ok}
        if down:
            raise DeviceUnreachableError(
                "; ".join(f"profile {p!r} is not reachable: {why}" for p, why in down.items())
            )

    # ------------------------------------------------------------------ loop
    def _loop(self, spec: JobSpec) -> JobStatus:
        if spec.tuning == "metaschedule":
            require_cost_model()  # fail the job now, not after training its first trials
        study = open_study(self.settings.database_url, self.job_id, spec)
        self.records.fail_interrupted(study, "interrupted: scheduler restarted")
        if spec.warm_start_from is not None:
            warm_start(study, self.settings.database_url, spec.warm_start_from, spec.budget.trials)
        self._restore(study, spec)
        ds = get_dataset(spec.dataset, self.user_dir)
        space = get_space(spec.space)(
            SpaceContext(input_shape=ds.input_shape, num_classes=ds.num_classes),
            spec.choices(),
            spec.granularity,
        )
        max_failed = (
            spec.budget.max_failed if spec.budget.max_failed is not None else spec.budget.trials
        )
        max_rejected = max(50, 5 * spec.budget.trials)
        capacity = self.executor.capacity_for(self.gpus(spec))
        self.proposer = Proposer(
            space,
            flat=sampler_plan(spec).flat,
            seed=spec.seed,
            fixed_params=dict(spec.fixed_params),
        )
        self.proposer.restore(study)
        in_flight: dict[Any, _InFlight] = {}
        exhausted = False
        while True:
            complete, failed, rejected = self._counts(study)
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
                self._cancel_all(study, in_flight, "interrupted: scheduler stopped", rerun=True)
                return JobStatus.queued
            if status == JobStatus.cancelling:
                self._cancel_all(study, in_flight, "job cancelled")
                return JobStatus.cancelled
            if failed > max_failed:
                self._cancel_all(study, in_flight, "job stopped: too many failed trials")
                raise RuntimeError(f"{failed} trials failed (budget.max_failed = {max_failed})")
            if rejected > max_rejected:
                self._cancel_all(study, in_flight, "job stopped: constraints reject everything")
                raise RuntimeError(
                    f"the pre-filter rejected {rejected} candidates untrained: the constraints "
                    f"{spec.constraints} look unreachable in this space"
                )
            sampled = True
            while (
                not exhausted
                and len(in_flight) < capacity
                and complete + len(in_flight) < spec.budget.trials
            ):
                try:
                    sampled = self._dispatch(study, spec, in_flight)
                except SpaceExhaustedError as e:
                    log.warning("job %s: %s", self.job_id, e)
                    study.set_user_attr("stopped_early", str(e))
                    exhausted = True
                if not sampled:
                    break
            if not sampled:
                continue  # a trial failed to sample: count it against max_failed first
            if not in_flight:
                return JobStatus.succeeded
            for handle in self.executor.wait(list(in_flight), self.settings.poll_interval_s):
                self._collect(study, spec, in_flight, in_flight.pop(handle), handle)

    @staticmethod
    def gpus(spec: JobSpec) -> float:
        """GPUs a trial of this job needs: one when it probes a CUDA (GPU) profile."""
        return 1.0 if any(is_gpu(get_profile(p)) for p in spec.profiles) else 0.0

    def _restore(self, study: optuna.Study, spec: JobSpec) -> None:
        """State a restarted (or extended) job carries over from its study."""
        self.constraints = spec.parsed_constraints()
        self.scoring = JobScoring.from_spec(spec.model_dump(mode="json"))
        fractions = spec.fidelity.rungs() if spec.fidelity else [1.0]
        eta = spec.fidelity.eta if spec.fidelity else 3
        self.ladder = Ladder(fractions, eta, spec.directions())
        self.tune_spent_s = 0.0
        for t in study.get_trials(deepcopy=False):
            for r in t.user_attrs.get("rungs", []):
                self.ladder.record(int(r["rung"]), t.number, r["values"], r["penalty"])
            for p in spec.profiles:
                self.tune_spent_s += float(
                    (t.user_attrs.get(f"latency@{p}") or {}).get("tune_s") or 0
                )

    def _dispatch(
        self, study: optuna.Study, spec: JobSpec, in_flight: dict[Any, _InFlight]
    ) -> bool:
        """Ask, sample and submit one trial of a candidate the job has not evaluated; False
        when the space could not sample it (raises SpaceExhaustedError when nothing is new)."""
        try:
            trial, cand = self.proposer.propose(study)
        except SamplingError as e:  # a space that cannot build this point: the trial fails
            self.records.create(e.trial.number, {}, "")
            self.records.fail(study, e.trial, str(e))
            return False
        candidate = cand.model_dump(mode="json")
        digest = cand.structural_hash()
        trial.set_user_attr("candidate", candidate)
        trial.set_user_attr("summary", cand.summary())
        trial.set_user_attr("candidate_hash", digest)
        self.records.create(trial.number, candidate, digest)
        self._submit(spec, in_flight, _InFlight(trial, cand, rung=0, digest=digest))
        return True

    def _submit(self, spec: JobSpec, in_flight: dict[Any, _InFlight], item: _InFlight) -> None:
        number = item.trial.number
        root = Path(self.settings.artifact_dir).resolve()
        tune_s = self._reserve_tuning(spec, len(spec.profiles))
        item.tune_reserved_s = tune_s * len(spec.profiles)
        prefilter = item.rung == 0 and spec.prefilter and spec.training.rank_energy is None
        request = EvalRequest(
            candidate=item.candidate,
            dataset=spec.dataset,
            split_seed=spec.split_seed,
            user_dir=str(self.user_dir),
            profiles=spec.profiles,
            bundle_dir=str(self.settings.job_dir(self.job_id) / f"trial-{number:05d}"),
            progress_path=str(self.settings.progress_file(self.job_id, number)),
            cache_dir=str(root / "parents"),
            threads=self.settings.worker_threads,
            recipe=spec.training.model_dump(),
            tuning_dir=self.tuning_dir(spec),
            probe_cache_dir=str(Path(self.settings.probe_cache_dir).resolve()),
            tune_budget_s=tune_s,
            constraints=[c for c in self.constraints if c.before_training] if prefilter else [],
            epochs_fraction=self.ladder.fractions[item.rung],
            export=item.rung == self.ladder.top,
            num_gpus=self.gpus(spec),
        )
        in_flight[self.executor.submit(request)] = item

    def tuning_dir(self, spec: JobSpec) -> str | None:
        if spec.tuning != "metaschedule":
            return None
        return str(Path(self.settings.tuning_dir).resolve())

    def _reserve_tuning(self, spec: JobSpec, profiles: int) -> float:
        """Tuning seconds a new trial may spend per profile: its share of what the job's
        ``budget.tune_s`` has left after what was spent and what trials in flight hold."""
        left = spec.budget.tune_s - self.tune_spent_s - self.tune_reserved_s
        per_profile = max(0.0, min(self.settings.tune_per_candidate_s, left / profiles))
        self.tune_reserved_s += per_profile * profiles
        return per_profile

    def _collect(
        self,
        study: optuna.Study,
        spec: JobSpec,
        in_flight: dict[Any, _InFlight],
        item: _InFlight,
        handle: Any,
    ) -> None:
        with logctx.bound(trial=item.trial.number):
            self._collect_one(study, spec, in_flight, item, handle)

    def _collect_one(
        self,
        study: optuna.Study,
        spec: JobSpec,
        in_flight: dict[Any, _InFlight],
        item: _InFlight,
        handle: Any,
    ) -> None:
        self.tune_reserved_s -= item.tune_reserved_s
        t = item.trial
        try:
            result = self.executor.result(handle)
        except Exception as e:
            if isinstance(worker_cause(e), TuningUnavailableError):
                raise  # a deployment error: the job fails with it, nothing tunes at random
            msg = error_message(e)
            # A device that failed or stayed busy is not the candidate's fault: recorded, but
            # not counted against max_failed.
            kind = "device" if isinstance(worker_cause(e), ProbeTransientError) else "error"
            log.warning("trial %s failed (%s): %s", t.number, kind, msg)
            self.records.fail(study, t, msg, kind=kind)
            self.proposer.release(item.digest)  # not evaluated: it may be proposed again
            return
        probes = result.probes()
        self.tune_spent_s += sum(st.tune_s for st in probes)
        item.runs.append(
            {
                "rung": item.rung,
                "timings": result.timings,
                "cpu_s": result.cpu_s,
                "device_s": result.device_s,
                "node": result.node,
                "parent_cache_hit": result.parent_cache_hit,
                "probe_cache_hits": [st.cache_hit for st in probes],
                # tuning records: tasks found tuned / tasks, per probe (lowered structures rarely
                # repeat; their tasks do)
                "probe_tasks": [[st.tasks_found_tuned, st.tasks] for st in probes],
            }
        )
        cost = {"runs": item.runs}
        t.set_user_attr("cost", cost)
        if result.prefiltered:
            self._tell_rejected(study, t, result, cost)
            return
        m = result.metrics
        values = self.scoring.values(m)
        penalties = self.scoring.constraint_values(m)
        if item.rung < self.ladder.top:
            penalty = sum(max(0.0, v) for v in penalties.values())
            rungs = [*t.user_attrs.get("rungs", [])]
            rungs.append({"rung": item.rung, "values": values, "penalty": penalty})
            t.set_user_attr("rungs", rungs)  # the lower-fidelity results, kept
            if self.ladder.promote(item.rung, t.number, values, penalty):
                nxt = _InFlight(t, item.candidate, item.rung + 1, item.digest, runs=item.runs)
                self._submit(spec, in_flight, nxt)
                return
            study.tell(t, state=OptunaState.PRUNED)
            self.records.update(
                t.number, TrialState.pruned, metrics=m.model_dump(mode="json"), timings=cost
            )
            return
        self._tell_complete(study, t, result, values, penalties, cost)

    def _tell_complete(
        self,
        study: optuna.Study,
        t: optuna.trial.Trial,
        result: EvalResult,
        values: list[float],
        penalties: dict[str, float],
        cost: dict[str, Any],
    ) -> None:
        m = result.metrics
        t.set_user_attr("metrics", m.model_dump(mode="json"))
        t.set_user_attr("test_accuracy", m.test_accuracy)
        t.set_user_attr("test_accuracy_ci95", m.test_accuracy_ci95)
        t.set_user_attr("params", m.params)
        t.set_user_attr("model_id", f"{self.job_id}-{t.number}")
        t.set_user_attr("timings", result.timings)
        t.set_user_attr("parent_cache_hit", result.parent_cache_hit)
        t.set_user_attr("node", result.node)
        scores = {k: f.model_dump(mode="json") for k, f in result.files.items()}
        t.set_user_attr("file_scores", scores)
        for prof, st in result.latency.items():
            t.set_user_attr(f"latency@{prof}", st.public())
        self._set_constraints(t, penalties)
        study.tell(t, values)
        self.records.update(
            t.number,
            TrialState.complete,
            count_complete=True,
            accuracy=m.accuracy,
            metrics=m.model_dump(mode="json"),
            latency={p: st.model_dump(mode="json") for p, st in result.latency.items()},
            timings=cost,
            bundle_dir=result.bundle_dir,
        )

    def _set_constraints(self, t: optuna.trial.Trial, penalties: dict[str, float]) -> None:
        for name, v in penalties.items():
            t.set_constraint(name, v)
        t.set_user_attr("constraints", penalties)
        t.set_user_attr("feasible", all(v <= 0 for v in penalties.values()))

    def _tell_rejected(
        self,
        study: optuna.Study,
        t: optuna.trial.Trial,
        result: EvalResult,
        cost: dict[str, Any],
    ) -> None:
        """A candidate the pre-filter rejected: COMPLETE and infeasible in the study (so the
        sampler learns the region is out of bounds), never trained. Its accuracy objective is
        a placeholder 0, marked ``accuracy_measured = False``."""
        assert result.prefilter is not None
        m: Metrics = result.metrics.model_copy(update={"accuracy": 0.0})
        violations = result.prefilter.violations
        t.set_user_attr("prefiltered", True)
        t.set_user_attr("accuracy_measured", False)
        t.set_user_attr("violations", violations)
        for prof, st in result.latency.items():
            t.set_user_attr(f"latency@{prof}", st.public())
        before = [c for c in self.constraints if c.before_training]
        self._set_constraints(t, constraint_values(m, before))
        study.tell(t, self.scoring.values(m))
        self.records.update(
            t.number,
            TrialState.rejected,
            metrics=result.metrics.model_dump(mode="json"),
            latency={p: st.model_dump(mode="json") for p, st in result.latency.items()},
            timings=cost,
            error="pre-filter: "
            + "; ".join(f"{k!r} broken by {v:.0%}" for k, v in violations.items()),
        )

    # ------------------------------------------------------------ bookkeeping
    def _counts(self, study: optuna.Study) -> tuple[int, int, int]:
        """Trained COMPLETE trials, FAIL trials that failed by themselves (not cancelled or
        stopped), and pre-filter rejections."""
        trials = study.get_trials(deepcopy=False, states=(OptunaState.COMPLETE, OptunaState.FAIL))
        rejected = sum(1 for t in trials if t.user_attrs.get("prefiltered"))
        complete = sum(1 for t in trials if t.state == OptunaState.COMPLETE) - rejected
        failed = sum(1 for t in trials if t.user_attrs.get("fail_kind") == "error")
        return complete, failed, rejected

    def _cancel_all(
        self,
        study: optuna.Study,
        in_flight: dict[Any, _InFlight],
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
