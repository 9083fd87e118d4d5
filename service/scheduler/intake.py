"""What comes back from a trial in flight: its evaluation told to the study (COMPLETE, a
pre-filter rejection, a lower rung promoted or PRUNED) or its failure recorded and sorted (the
candidate's fault, counted; a device's, counted apart: a device that keeps failing fails the
job before more candidates are trained for it).

A mixin of :class:`service.scheduler.controller.JobController`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState as OptunaState

from search_spaces import Candidate, HwnasError
from service.db.models import TrialState
from service.scheduler.fidelity import Ladder
from service.scheduler.front import JobScoring
from service.scheduler.outcomes import tell_complete, tell_rejected
from service.scheduler.proposals import Proposer
from service.scheduler.records import TrialRecords
from service.scheduler.results import error_message, worker_cause
from service.schemas import JobSpec
from workers.probe.errors import ProbeTransientError, TuningUnavailableError
from workers.records import EvalResult
from workers.scoring import Constraint

log = logging.getLogger(__name__)


class DeviceUnreachableError(HwnasError, ConnectionError):
    """A profile's device did not answer when the job was claimed."""


class NoGpuError(HwnasError, RuntimeError):
    """The job probes a CUDA profile and the cluster has no GPU to run its trials on."""


DEVICE_FAILURES = 3  # trials in a row failed by a device before the job fails with the reason


@dataclass
class InFlight:
    trial: optuna.trial.Trial
    candidate: Candidate
    rung: int
    digest: str = ""
    tune_reserved_s: float = 0.0
    runs: list[dict[str, Any]] = field(default_factory=list)  # cost of each evaluation
    submitted: float = field(default_factory=time.monotonic)


class Intake:
    executor: Any
    job_id: int
    records: TrialRecords
    proposer: Proposer
    scoring: JobScoring
    ladder: Ladder
    constraints: list[Constraint]
    tune_reserved_s: float
    tune_spent_s: float
    device_failures: int

    def _submit(self, spec: JobSpec, in_flight: dict[Any, InFlight], item: InFlight) -> None:
        raise NotImplementedError

    def _unevaluated(self, study: optuna.Study, item: InFlight, message: str, kind: str) -> None:
        """A trial in flight that ends without an evaluation (it failed, or ran past its
        deadline): its tuning reservation returned, FAILed with ``kind``, and its candidate
        free to be proposed again."""
        self.tune_reserved_s -= item.tune_reserved_s
        self.records.fail(study, item.trial, message, kind=kind)
        self.proposer.release(item.digest)

    def _collect(
        self,
        study: optuna.Study,
        spec: JobSpec,
        in_flight: dict[Any, InFlight],
        item: InFlight,
        handle: Any,
    ) -> None:
        """Fetch what came back for ``item`` and tell it (called with its trial bound to the log
        context); each write is fenced, the fetch is not (a fence holds the job's row lock)."""
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
            self._unevaluated(study, item, msg, kind)
            if kind == "device":
                self.device_failures += 1
                if self.device_failures >= DEVICE_FAILURES:
                    raise DeviceUnreachableError(
                        f"{self.device_failures} trials in a row failed on a device: {msg}"
                    ) from None
            return
        self.tune_reserved_s -= item.tune_reserved_s
        self.device_failures = 0
        with self.records.fence.session():  # the writes only: no row lock while a result comes
            self._tell(study, spec, in_flight, item, result)

    def _tell(
        self,
        study: optuna.Study,
        spec: JobSpec,
        in_flight: dict[Any, InFlight],
        item: InFlight,
        result: EvalResult,
    ) -> None:
        t = item.trial
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
            tell_rejected(self.records, study, t, result, cost, self.constraints, self.scoring)
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
                nxt = InFlight(t, item.candidate, item.rung + 1, item.digest, runs=item.runs)
                self._submit(spec, in_flight, nxt)
                return
            study.tell(t, state=OptunaState.PRUNED)
            self.records.update(
                t.number, TrialState.pruned, metrics=m.model_dump(mode="json"), timings=cost
            )
            return
        tell_complete(
            self.records, study, t, result, values, penalties, cost, f"{self.job_id}-{t.number}"
        )

    # ------------------------------------------------------------ bookkeeping
