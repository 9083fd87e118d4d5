"""The fault kinds of the suite: each submits a tiny digits job (4 trials), injects one fault
into a real scheduler (with its embedded Ray) or its database or caches, lets the service
recover, and checks the invariants (checks.py). Run by tests/faults/test_faults.py and by
``make bench-faults`` (bench/faults.py), which records every kind's outcome."""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from optuna.trial import TrialState as OptunaState
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from service.db import accounts, crud
from service.db.migrate import upgrade
from service.db.models import Job, JobStatus
from service.db.session import get_sessionmaker
from service.scheduler.study import get_storage, load_study
from service.schemas import JobSpec
from tests.faults.checks import Outcome, check
from tests.faults.procs import HEARTBEAT_TIMEOUT_S, Scheduler, restart_postgres, wait_for

BUDGET = 4
SPEC: dict[str, Any] = {
    "dataset": "digits",
    "space": "mlp_small",
    "space_overrides": {"depth": [1, 2], "width": [16, 32, 64], "abits": [32]},
    "profiles": ["x86/local"],
    "budget": {"trials": BUDGET, "tune_s": 0},
    "training": {"epochs": 2, "finetune_epochs": 1},
    "tuning": "off",
    "sampler": "random",
    "seed": 11,
}
JOB_TIMEOUT_S = 420.0


class Run:
    """One scenario's database, directories, job and schedulers."""

    def __init__(self, tmp: Path, db_url: str, spec: dict[str, Any] | None = None) -> None:
        self.tmp, self.db_url = tmp, db_url
        self.artifacts = tmp / "artifacts"
        self.marks = tmp / "fault-marks"
        self.schedulers: list[Scheduler] = []
        upgrade(db_url)
        get_storage(db_url)
        self.job_id = self.submit(spec or SPEC)

    def submit(self, spec: dict[str, Any]) -> int:
        with get_sessionmaker(self.db_url)() as s:
            job = crud.create_job(
                session=s,
                job_in=JobSpec.model_validate(spec),
                owner_id=accounts.admin_user(session=s).id,
            )
            return job.id

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "HWNAS_DATABASE_URL": self.db_url,
            "HWNAS_ARTIFACT_DIR": str(self.artifacts),
            "HWNAS_TUNING_DIR": str(self.tmp / "tuning"),
            "HWNAS_PROBE_CACHE_DIR": str(self.tmp / "probe-cache"),
            "HWNAS_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_TIMEOUT_S),
            "HWNAS_POLL_INTERVAL_S": "0.3",
            "HWNAS_VERIFY": "false",
            "HWNAS_GC_INTERVAL_S": "0",
            "HWNAS_FAULT_DIR": str(self.marks),
            "RAY_USAGE_STATS_ENABLED": "0",
            **extra,
        }

    def start(self, name: str, **extra: str) -> Scheduler:
        s = Scheduler(self.env(**extra), self.tmp / f"scheduler-{name}.log", name)
        self.schedulers.append(s)
        return s

    def states(self) -> list[OptunaState]:
        try:
            return [t.state for t in load_study(self.db_url, self.job_id).trials]
        except KeyError:
            return []

    def job(self) -> Job:
        with get_sessionmaker(self.db_url)() as s:
            job = s.get(Job, self.job_id)
            assert job is not None
            return job

    def ended(self) -> bool:
        return self.job().status in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)

    def wait_ended(self, timeout_s: float = JOB_TIMEOUT_S) -> None:
        wait_for(self.ended, timeout_s, f"job {self.job_id} to end")

    def fired(self, point: str) -> int:
        return int((self.marks / f"{point}.fired").is_file())

    def stop_all(self) -> None:
        for s in self.schedulers:
            s.stop(signal.SIGCONT)  # a stopped group cannot act on SIGTERM
            s.stop()


# --------------------------------------------------------------------------- kinds
def _point_in_scheduler(point: str) -> Callable[[Run], int]:
    """The scheduler kills itself at ``point`` (kill -9, no cleanup); a new one resumes."""

    def run(r: Run) -> int:
        first = r.start("a", HWNAS_FAULT=point)
        wait_for(lambda: not first.alive, JOB_TIMEOUT_S, f"the scheduler to die at {point}")
        first.stop(signal.SIGKILL)  # its Ray, left without a driver
        r.start("b")
        r.wait_ended()
        return r.fired(point)

    return run


def _box_crash_at(point: str) -> Callable[[Run], int]:
    """A trial reaching ``point`` kills the scheduler's whole process group (the scheduler, its
    Ray, every worker): the box crashed while a trial was there. A new scheduler resumes."""

    def run(r: Run) -> int:
        first = r.start("a", HWNAS_FAULT=point, HWNAS_FAULT_MODE="group")
        wait_for(lambda: not first.alive, JOB_TIMEOUT_S, f"the box to crash at {point}")
        first.stop(signal.SIGKILL)
        r.start("b")
        r.wait_ended()
        return r.fired(point)

    return run


def _process_dies_at(point: str) -> Callable[[Run], int]:
    """One process (a Ray worker, the probe actor) dies at ``point``; the scheduler lives on."""

    def run(r: Run) -> int:
        r.start("a", HWNAS_FAULT=point)
        r.wait_ended()
        return r.fired(point)

    return run


def scheduler_kill9(r: Run) -> int:
    """kill -9 of the scheduler's group with one trial COMPLETE and one RUNNING."""
    first = r.start("a")
    wait_for(
        lambda: OptunaState.COMPLETE in r.states() and OptunaState.RUNNING in r.states(),
        JOB_TIMEOUT_S,
        "a COMPLETE and a RUNNING trial",
    )
    first.stop(signal.SIGKILL)
    r.start("b")
    r.wait_ended()
    return 1


def sigstop_split_brain(r: Run) -> int:
    """SIGSTOP of the scheduler running the job (its whole group: a stalled host) past the
    heartbeat timeout; the second scheduler takes the job over; SIGCONT: the first must find its
    lease gone and write nothing."""
    first = r.start("a")
    wait_for(lambda: OptunaState.RUNNING in r.states(), JOB_TIMEOUT_S, "a RUNNING trial")
    second = r.start("b")
    wait_for(lambda: "scheduler b ready" in second.text(), 120, "scheduler b to be ready")
    first.stop(signal.SIGSTOP)
    wait_for(lambda: r.job().worker_id == "b", 60, "scheduler b to take the job over")
    time.sleep(2 * HEARTBEAT_TIMEOUT_S)
    first.signal_group(signal.SIGCONT)
    r.wait_ended()
    wait_for(
        lambda: "lease" in first.text() or "claimed by another" in first.text(),
        60,
        "scheduler a to notice its lost lease",
    )
    return 1


def caches_corrupted(r: Run) -> int:
    """A first job fills the parent and probe caches; every entry is damaged; a second job of
    the same candidates must rebuild them (and its result must hold)."""
    r.start("a")
    r.wait_ended()
    damaged = 0
    for f in (r.artifacts / "parents").glob("*.safetensors"):
        data = f.read_bytes()
        f.write_bytes(data[: len(data) // 2])  # torn
        damaged += 1
    for f in (r.tmp / "probe-cache").rglob("*.json"):
        f.write_text('{"median_ms": ')  # torn JSON
        damaged += 1
    r.job_id = r.submit(SPEC)  # the same candidates: every cache lookup hits a damaged entry
    r.wait_ended()
    from workers.parents import _load_checked

    for f in (r.artifacts / "parents").glob("*.safetensors"):
        _load_checked(f)  # rebuilt: loads and matches its checksum
    return int(damaged > 0)


def trial_deadline(r: Run) -> int:
    """A trial that never returns (hangs in training) is cancelled at its deadline, fails
    (counted), and the job goes on to its budget."""
    r.start("a", HWNAS_FAULT="mid_train", HWNAS_FAULT_MODE="hang")
    r.wait_ended()
    return r.fired("mid_train")


def postgres_restart(r: Run) -> int:
    """The tests' private PostgreSQL restarted mid-job (never the machine's shared server)."""
    data_dir = os.environ["HWNAS_TEST_PG_DIR"]
    port = int(r.db_url.rsplit(":", 1)[1].split("/")[0])
    r.start("a")
    wait_for(lambda: OptunaState.COMPLETE in r.states(), JOB_TIMEOUT_S, "a COMPLETE trial")
    restart_postgres(data_dir, port)
    r.wait_ended()
    return 1


KINDS: dict[str, Callable[[Run], int]] = {
    "kill9_after_tell": _point_in_scheduler("after_tell"),
    "kill9_during_claim": _point_in_scheduler("claim"),
    "kill9_mid_export": _box_crash_at("mid_export"),
    "kill9_mid_probe": _box_crash_at("mid_probe"),
    "scheduler_kill9_mid_job": scheduler_kill9,
    "sigstop_split_brain": sigstop_split_brain,
    "ray_worker_killed": _process_dies_at("mid_train"),
    "probe_actor_killed": _process_dies_at("mid_probe"),
    "caches_corrupted": caches_corrupted,
    "trial_deadline": trial_deadline,
    "postgres_restart": postgres_restart,
}
NEEDS_PG = {"postgres_restart"}
SPECS = {"trial_deadline": {**SPEC, "budget": {**SPEC["budget"], "trial_deadline_s": 30}}}


def pg_database() -> tuple[str, Callable[[], None]] | None:
    """A fresh database on the tests' private PostgreSQL (with-postgres.sh), and its dropper."""
    base, data_dir = os.environ.get("HWNAS_TEST_PG"), os.environ.get("HWNAS_TEST_PG_DIR")
    if not base or not data_dir:
        return None
    name = f"hwnas_fault_{secrets.token_hex(4)}"
    # no pool: the server is restarted while this engine lives (a pooled connection would be dead)
    admin = create_engine(base, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return base.rsplit("/", 1)[0] + f"/{name}", drop


def run_kind(kind: str, tmp: Path) -> Outcome:
    """Run fault ``kind`` in ``tmp`` and check the invariants after it."""
    out = Outcome(kind)
    tmp.mkdir(parents=True, exist_ok=True)
    drop: Callable[[], None] | None = None
    if kind in NEEDS_PG:
        pg = pg_database()
        if pg is None:
            raise RuntimeError(
                "postgres_restart needs the tests' private PostgreSQL (scripts/with-postgres.sh"
                " sets HWNAS_TEST_PG and HWNAS_TEST_PG_DIR)"
            )
        db_url, drop = pg
    else:
        db_url = f"sqlite:///{tmp / 'hwnas.db'}"
    t0 = time.monotonic()
    r = Run(tmp, db_url, SPECS.get(kind))
    try:
        out.injected = KINDS[kind](r)
    except Exception as e:  # noqa: BLE001 - recorded as a problem of this kind
        out.problems.append(f"{type(e).__name__}: {e}")
    finally:
        r.stop_all()
    out.seconds = round(time.monotonic() - t0, 1)
    try:
        check(out, db_url, r.job_id, BUDGET, r.artifacts)
    except Exception as e:  # noqa: BLE001
        out.problems.append(f"check failed: {type(e).__name__}: {e}")
        out.survived = 0
    if out.problems:
        out.survived = 0
    if drop is not None:
        from service.db.session import get_engine

        get_engine(db_url).dispose()
        get_storage(db_url).engine.dispose()
        drop()
    return out
