"""Run one job: Optuna ask/tell in this process, candidates evaluated as Ray tasks.

The controller is the only writer of the job's study and trial rows, and only while it holds
the job's lease (service.scheduler.fence): one that lost it stops without writing and cancels
its Ray tasks. It keeps up to ``executor.capacity`` trials in flight, heartbeats the job row (a
dead scheduler's job is reclaimed by another), and stops early when the job is cancelled. When
it claims a job it reconciles the study with the rows (a crash between their writes) and re-runs
trials a dead or stopped scheduler left behind, once. Per trial: the hardware pre-filter (in the
worker, before training), successive-halving rungs when the job asks for them, constraints to
Optuna, a deadline. Device failures are counted: a profile that keeps failing fails the job
before more candidates are trained for it. A transient database error is retried (bounded);
the job fails only when the database stays away.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import optuna
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError

from hw_profiles import get_profile
from search_spaces import NetworkSpace, SearchSpace, SpaceContext, get_space
from service import logctx
from service.db.models import Job, JobStatus, utcnow
from service.db.queue import heartbeat
from service.db.session import get_sessionmaker
from service.scheduler.endings import Endings
from service.scheduler.fence import Fence, LeaseLost
from service.scheduler.fidelity import Ladder
from service.scheduler.front import JobScoring
from service.scheduler.intake import (
    DeviceUnreachableError,
    InFlight,
    Intake,
)
from service.scheduler.proposals import Proposer, SamplingError, SpaceExhaustedError
from service.scheduler.records import TrialRecords
from service.scheduler.study import (
    open_study,
    resume_sampler,
    sampler_plan,
    warm_start,
)
from service.scheduler.verification import FrontVerifier
from service.schemas import JobSpec
from service.settings import Settings
from workers.data import get_dataset
from workers.probe.targets import is_gpu
from workers.probe.tuning import require_cost_model
from workers.records import EvalRequest, EvalResult, NetworkSource, VerifyRequest, VerifyResult
from workers.scoring import Constraint

log = logging.getLogger(__name__)


DB_RETRIES = 5  # transient database errors in a row before the job fails
DEFAULT_DEADLINE_S = 1800.0  # plus twice a trial's tuning share (see JobController.deadline_s)


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


class JobController(Endings, Intake):
    def __init__(
        self,
        settings: Settings,
        executor: Executor,
        job_id: int,
        worker_id: str,
        stop: threading.Event | None = None,
        lease: int | None = None,
    ) -> None:
        self.settings = settings
        self.stop = stop or threading.Event()
        self.executor = executor
        self.job_id = job_id
        self.worker_id = worker_id
        self.sessions = get_sessionmaker(settings.database_url)
        self.lease = lease
        self.fence: Fence  # set when the job starts (adopting the claim may fail)
        self.records: TrialRecords
        self.in_flight: dict[Any, InFlight] = {}
        self.device_failures = 0  # trials in a row a device failed
        self.exhausted = False  # set by the loop: no new candidate left to draw
        self.tune_spent_s = 0.0  # MetaSchedule seconds this job's trials spent (budget.tune_s)
        self.tune_reserved_s = 0.0  # ... and what the trials in flight may still spend
        self.constraints: list[Constraint] = []
        self.scoring = JobScoring([], [], [], False)
        self.ladder = Ladder([1.0], 3, [])
        self.proposer: Proposer  # set when the loop starts (it needs the space)
        self.user_dir = settings.user_data_dir  # the owner's uploads, set by run()
        self.owner_id: int | None = None
        self.network: NetworkSource | None = None  # a 'network' job's upload, set by the loop

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
            self.fence = Fence(self.sessions, self.job_id, self.worker_id, self.lease)
            self.lease = self.fence.lease
            self.records = TrialRecords(self.fence, self.job_id)
            with self.fence.session() as s:
                job = s.get(Job, self.job_id)
                assert job is not None
                self.user_dir = self.settings.datasets_dir(job.owner_id)
                self.owner_id = job.owner_id
                raw_spec = dict(job.spec)
                if job.started_at is None:
                    job.started_at = utcnow()
            spec = JobSpec.model_validate(raw_spec)
            self._check_devices(spec)
            status = self._loop(spec)
            if status in (JobStatus.succeeded, JobStatus.cancelled) and self.settings.verify:
                status = FrontVerifier(self, spec).run(status)
        except LeaseLost as e:
            log.warning("job %s: %s; stopping without writing", self.job_id, e)
            self._abandon()
            return JobStatus.running
        except ValidationError as e:
            log.warning("job %s: its stored spec does not validate: %s", self.job_id, e)
            return self._fail(f"the job's spec is not valid: {_first_error(e)}")
        except Exception as e:
            log.exception("job %s failed", self.job_id)
            return self._fail(f"{type(e).__name__}: {e}")
        return self._finish(status)

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
        capacity = self.executor.capacity_for(self.gpus(spec))
        with self.fence.session():
            study = open_study(self.settings.database_url, self.job_id, spec)
            resume_sampler(study, spec)
        self.records.reconcile(study)
        self.records.fail_interrupted(study, "interrupted: scheduler restarted")
        if spec.warm_start_from is not None:
            with self.fence.session():
                warm_start(
                    study, self.settings.database_url, spec.warm_start_from, spec.budget.trials
                )
        self._restore(study, spec)
        ds = get_dataset(spec.dataset, self.user_dir)
        context = SpaceContext(input_shape=ds.input_shape, num_classes=ds.num_classes)
        if spec.network is not None:
            self.network = self._network(spec)
            space: SearchSpace = NetworkSpace(
                context, spec.choices(), spec.granularity, network=self.network.description
            )
        else:
            space = get_space(spec.space)(context, spec.choices(), spec.granularity)
        max_failed = (
            spec.budget.max_failed if spec.budget.max_failed is not None else spec.budget.trials
        )
        max_rejected = max(50, 5 * spec.budget.trials)
        self.proposer = Proposer(
            space,
            flat=sampler_plan(spec).flat,
            seed=spec.seed,
            fixed_params=dict(spec.fixed_params),
        )
        self.proposer.restore(study)
        in_flight = self.in_flight
        db_errors = 0
        while True:
            try:
                status = self._step(study, spec, in_flight, capacity, max_failed, max_rejected)
                db_errors = 0
            except DBAPIError as e:  # transient: the server or the connection went away
                if not (isinstance(e, OperationalError) or e.connection_invalidated):
                    raise
                db_errors += 1
                if db_errors > DB_RETRIES:
                    raise
                pause = min(30.0, 2.0**db_errors)
                log.warning(
                    "job %s: database error (%d of %d), retrying in %.0f s: %s",
                    self.job_id,
                    db_errors,
                    DB_RETRIES,
                    pause,
                    str(e).splitlines()[0],
                )
                self.stop.wait(pause)
                self._resync(study, in_flight)
                continue
            if status is not None:
                return status

    def _network(self, spec: JobSpec) -> NetworkSource:
        """The job's uploaded network, as it was at submit (its digest): else the job fails."""
        from service.db import networks

        assert spec.network is not None and self.owner_id is not None
        with self.sessions() as s:
            row = networks.find(
                session=s, owner_id=self.owner_id, name=spec.network.removeprefix("user/")
            )
        if row is None:
            raise FileNotFoundError(f"network {spec.network!r} was deleted")
        if spec.network_digest is not None and row.digest != spec.network_digest:
            raise ValueError(
                f"network {spec.network!r} was replaced since the job was submitted (sha256 "
                f"{row.digest[:12]}, the job's {spec.network_digest[:12]})"
            )
        return NetworkSource(
            store=str(networks.store_dir(self.settings, row.owner_id)),
            description=networks.description(row),
        )

    def deadline_s(self, spec: JobSpec) -> float:
        """A trial's deadline: the spec's, or 30 minutes plus twice its tuning share."""
        if spec.budget.trial_deadline_s is not None:
            return spec.budget.trial_deadline_s
        return DEFAULT_DEADLINE_S + 2 * self.settings.tune_per_candidate_s * len(spec.profiles)

    def _step(
        self,
        study: optuna.Study,
        spec: JobSpec,
        in_flight: dict[Any, InFlight],
        capacity: int,
        max_failed: int,
        max_rejected: int,
    ) -> JobStatus | None:
        """One turn of the loop; the job's status when it must end."""
        complete, failed, rejected = self.records.counts()
        # one cheap UPDATE per loop (at most every poll interval while trials run): it keeps
        # our claim alive and is how a cancel request reaches us
        with self.sessions() as s:
            status = heartbeat(
                session=s, job_id=self.job_id, worker_id=self.worker_id, lease=self.lease
            )
        if status is None:
            raise LeaseLost(f"job {self.job_id} was claimed by another scheduler")
        self._expire(study, spec, in_flight)
        if self.device_failures:  # a device failed the last trial: is it there at all?
            self._check_devices(spec)
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
            not self.exhausted
            and len(in_flight) < capacity
            and complete + len(in_flight) < spec.budget.trials
        ):
            try:
                with self.fence.session():
                    sampled = self._dispatch(study, spec, in_flight)
            except SpaceExhaustedError as e:
                log.warning("job %s: %s", self.job_id, e)
                with self.fence.session():
                    study.set_user_attr("stopped_early", str(e))
                self.exhausted = True
            if not sampled:
                break
        if not sampled:
            return None  # a trial failed to sample: count it against max_failed first
        if not in_flight:
            return JobStatus.succeeded
        for handle in self.executor.wait(list(in_flight), self.settings.poll_interval_s):
            item = in_flight.pop(handle)
            with logctx.bound(trial=item.trial.number):
                self._collect(study, spec, in_flight, item, handle)
        return None

    def _expire(self, study: optuna.Study, spec: JobSpec, in_flight: dict[Any, InFlight]) -> None:
        """Cancel and FAIL (kind "deadline", counted against max_failed) the trials in flight
        past their deadline."""
        limit = self.deadline_s(spec)
        now = time.monotonic()
        for handle, item in list(in_flight.items()):
            if now - item.submitted <= limit:
                continue
            self.executor.cancel(handle)
            del in_flight[handle]
            log.warning("trial %s ran past its deadline of %.0f s", item.trial.number, limit)
            self._unevaluated(study, item, f"ran past its deadline of {limit:.0f} s", "deadline")

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

    def _dispatch(self, study: optuna.Study, spec: JobSpec, in_flight: dict[Any, InFlight]) -> bool:
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
        self._submit(spec, in_flight, InFlight(trial, cand, rung=0, digest=digest))
        return True

    def _submit(self, spec: JobSpec, in_flight: dict[Any, InFlight], item: InFlight) -> None:
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
            network=self.network,
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
