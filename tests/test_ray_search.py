"""The search on real Ray: a worker process that dies, a two-node cluster, and a scheduler
killed with SIGKILL mid-job. Every process started here is stopped here, by PID."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState as OptunaState

from service.db import accounts, crud
from service.db.migrate import upgrade
from service.db.models import Job, JobStatus
from service.db.queue import claim_job
from service.db.session import get_sessionmaker
from service.scheduler.controller import JobController
from service.scheduler.study import get_storage, load_study
from service.schemas import JobSpec
from service.settings import Settings
from tests.faults.procs import stop_tree

pytestmark = pytest.mark.slow

SPEC: dict[str, Any] = {
    "dataset": "digits",
    "space": "mlp_small",
    "space_overrides": {"depth": [1], "width": [32, 64], "abits": [32]},
    "profiles": ["x86/local"],
    "budget": {"trials": 4, "tune_s": 0},
    "training": {"epochs": 2, "finetune_epochs": 1},
    "tuning": "off",
    "sampler": "random",
    "seed": 5,
}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _settings(tmp: Path, **kw: Any) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp / 'hwnas.db'}",
        artifact_dir=tmp / "artifacts",
        tuning_dir=tmp / "tuning",
        probe_cache_dir=tmp / "probe-cache",
        poll_interval_s=0.2,
        **kw,
    )


def _submit(settings: Settings, spec: dict[str, Any], claim: bool = True) -> int:
    upgrade(settings.database_url)
    get_storage(settings.database_url)
    with get_sessionmaker(settings.database_url)() as s:
        job = crud.create_job(
            session=s,
            job_in=JobSpec.model_validate(spec),
            owner_id=accounts.admin_user(session=s).id,
        )
        if claim:
            assert claim_job(session=s, worker_id="test", stale_after_s=60) is not None
        return job.id


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.2)


def _crash_first_trial(marks: str) -> Callable[[dict[str, Any]], Any]:
    def task(payload: dict[str, Any]) -> Any:
        import os
        import uuid
        from pathlib import Path

        from workers.evaluate import evaluate_json

        if payload["bundle_dir"].endswith("trial-00000"):
            (Path(marks) / f"attempt-{uuid.uuid4().hex}").touch()
            os._exit(3)  # the worker process dies, as on OOM-kill or a segfault
        return evaluate_json(payload)

    return task  # a closure: Ray ships it by value


def test_dead_worker_is_retried_once_then_recorded(tmp_path: Path) -> None:
    import ray

    from service.scheduler.executor import RayExecutor

    settings = _settings(tmp_path, ray_num_cpus=2)
    job_id = _submit(settings, {**SPEC, "budget": {"trials": 2, "tune_s": 0}})
    marks = tmp_path / "marks"
    marks.mkdir()
    executor = RayExecutor(settings, task=_crash_first_trial(str(marks)))
    try:
        status = JobController(settings, executor, job_id, "test").run()
    finally:
        executor.shutdown()
    assert status == JobStatus.succeeded
    assert len(list(marks.iterdir())) == 2  # the first attempt and Ray's one retry
    study = load_study(settings.database_url, job_id)
    first = study.trials[0]
    assert first.state == OptunaState.FAIL
    assert "WorkerCrashedError" in first.user_attrs["error"]
    assert len(study.get_trials(states=(OptunaState.COMPLETE,))) == 2
    assert not ray.is_initialized()


@pytest.fixture
def ray_cluster(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A Ray head and a second node on this machine, 1 CPU each, token auth on; yields the
    address and the environment a client needs (the token)."""
    token = tmp_path / "ray-token"
    token.write_text(secrets.token_hex(32))
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    ray_bin = str(Path(sys.executable).with_name("ray"))
    port = _free_port()  # not 6379: these machines run Redis there
    address = f"127.0.0.1:{port}"
    common = ["--block", "--num-cpus=1", "--disable-usage-stats", "--node-ip-address=127.0.0.1"]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with (tmp_path / "ray.log").open("ab") as out:
            head = [ray_bin, "start", "--head", f"--port={port}", "--include-dashboard=false"]
            procs.append(
                subprocess.Popen(
                    [*head, *common], env=env, stdout=out, stderr=out, start_new_session=True
                )
            )
            time.sleep(8)
            worker = [ray_bin, "start", f"--address={address}"]
            procs.append(
                subprocess.Popen(
                    [*worker, *common], env=env, stdout=out, stderr=out, start_new_session=True
                )
            )
            time.sleep(5)
        yield address, env
    finally:
        for p in reversed(procs):
            stop_tree(p)
        # `ray start` records its address for later plain `ray.init()` calls: forget ours
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if current.is_file() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()


def _scheduler_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    return {
        **(base or os.environ),
        "HWNAS_DATABASE_URL": settings.database_url,
        "HWNAS_ARTIFACT_DIR": str(settings.artifact_dir),
        "HWNAS_TUNING_DIR": str(settings.tuning_dir),
        "HWNAS_PROBE_CACHE_DIR": str(settings.probe_cache_dir),
        "HWNAS_HEARTBEAT_TIMEOUT_S": "3",
        "HWNAS_POLL_INTERVAL_S": "0.2",
    }


def _job_status(settings: Settings, job_id: int) -> JobStatus | None:
    with get_sessionmaker(settings.database_url)() as s:
        job = s.get(Job, job_id)
        return None if job is None else job.status


SCHEDULER = [sys.executable, "-m", "service.cli", "scheduler"]


def test_job_runs_across_two_ray_nodes(
    tmp_path: Path, ray_cluster: tuple[str, dict[str, str]]
) -> None:
    from service.api.report import job_report

    address, ray_env = ray_cluster
    settings = _settings(tmp_path)
    job_id = _submit(settings, SPEC, claim=False)
    env = {**_scheduler_env(settings, ray_env), "HWNAS_RAY_ADDRESS": address}
    with (tmp_path / "scheduler.log").open("ab") as out:
        proc = subprocess.Popen(SCHEDULER, env=env, stdout=out, stderr=out, start_new_session=True)
        try:
            _wait(lambda: _job_status(settings, job_id) == JobStatus.succeeded, 300, "the job")
        finally:
            stop_tree(proc)
    with get_sessionmaker(settings.database_url)() as s:
        rows, _ = crud.list_trials(session=s, job_id=job_id, skip=0, limit=100)
    report = job_report(job_id, rows)
    assert len(report.nodes) == 2, report.nodes  # trials ran on both nodes
    assert sum(report.nodes.values()) == 4


def test_scheduler_killed_mid_job_resumes_with_exact_budget(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    job_id = _submit(settings, {**SPEC, "budget": {"trials": 5, "tune_s": 0}}, claim=False)
    env = _scheduler_env(settings)
    cmd = SCHEDULER
    sessions = get_sessionmaker(settings.database_url)

    def states() -> list[OptunaState]:
        try:
            return [t.state for t in load_study(settings.database_url, job_id).trials]
        except KeyError:
            return []

    with (tmp_path / "scheduler.log").open("ab") as out:
        first = subprocess.Popen(cmd, env=env, stdout=out, stderr=out, start_new_session=True)
        try:
            _wait(
                lambda: OptunaState.COMPLETE in states() and OptunaState.RUNNING in states(),
                180,
                "a COMPLETE and a RUNNING trial",
            )
        finally:
            stop_tree(first, signal.SIGKILL)  # kill -9: no cleanup of any kind
        running = [
            t for t in load_study(settings.database_url, job_id).trials if t.state.name == "RUNNING"
        ]
        assert running
        second = subprocess.Popen(cmd, env=env, stdout=out, stderr=out, start_new_session=True)
        try:

            def finished() -> bool:
                with sessions() as s:
                    job = s.get(Job, job_id)
                    return job is not None and job.status == JobStatus.succeeded

            _wait(finished, 300, "the resumed job to succeed")
        finally:
            stop_tree(second)
    study = load_study(settings.database_url, job_id)
    complete = study.get_trials(states=(OptunaState.COMPLETE,))
    assert len(complete) == 5  # exactly the budget
    for t in running:
        after = study.trials[t.number]
        assert after.state == OptunaState.FAIL
        assert after.user_attrs["error"] == "interrupted: scheduler restarted"
        reruns = [x for x in study.trials if x.user_attrs.get("retry_of") == t.number]
        assert len(reruns) == 1
        assert {k: reruns[0].params[k] for k in t.params} == t.params
        assert reruns[0].state == OptunaState.COMPLETE
