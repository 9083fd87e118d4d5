"""The scheduler's job controller on SQLite and PostgreSQL, with real training and TVM probes.

Trials run in-process (an executor with Ray's submit/wait/result/cancel surface) so the
controller's bookkeeping can be checked trial by trial; the Ray path is covered end to end in
tests/test_e2e.py.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState as OptunaState
from sqlalchemy import select

from service.db import crud
from service.db.models import Job, JobStatus, Trial, TrialState
from service.db.session import get_sessionmaker
from service.scheduler.controller import JobController
from service.scheduler.study import load_study
from service.schemas import JobSpec
from tests.service.inline import InlineExecutor, settings_for, submit

SPEC = {
    "dataset": "digits",
    "space": "mlp_small",
    "space_overrides": {"depth": [1], "width": [32, 64]},
    "profiles": ["x86/local"],
    "budget": {"trials": 3, "tune_s": 300},
    "training": {"epochs": 2, "finetune_epochs": 1},
    "seed": 1,
}


def test_job_runs_to_budget_and_keeps_failures(db_url: str, tmp_path: Path) -> None:
    settings = settings_for(db_url, tmp_path)
    job_id = submit(db_url, SPEC)
    executor = InlineExecutor(fail_numbers={1})
    status = JobController(settings, executor, job_id, "test").run()
    assert status == JobStatus.succeeded

    study = load_study(db_url, job_id)
    assert study.metric_names == ["accuracy", "latency_ms@x86/local", "size_bytes"]
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE", "MINIMIZE"]
    complete = study.get_trials(states=(OptunaState.COMPLETE,))
    failed = study.get_trials(states=(OptunaState.FAIL,))
    assert len(complete) == 3 and len(failed) == 1  # budget counts COMPLETE trials
    assert "injected failure" in failed[0].user_attrs["error"]
    for t in complete:
        assert 0 < t.values[0] <= 1 and t.values[1] > 0 and t.values[2] > 0
        lat = t.user_attrs["latency@x86/local"]
        assert lat["tuning"] == "metaschedule" and lat["partial"] is False
    assert {t.number for t in study.best_trials} <= {t.number for t in complete}

    with get_sessionmaker(db_url)() as s:
        job = s.get(Job, job_id)
        assert job is not None
        assert (job.trials_complete, job.trials_failed) == (3, 1)
        assert job.best_accuracy == pytest.approx(max(t.values[0] for t in complete))
        rows = s.scalars(select(Trial).where(Trial.job_id == job_id).order_by(Trial.number)).all()
        assert [r.state for r in rows].count(TrialState.failed) == 1
        bad = next(r for r in rows if r.state == TrialState.failed)
        assert bad.error and "injected failure" in bad.error
        for r in rows:
            if r.state == TrialState.complete:
                assert r.bundle_dir and (Path(r.bundle_dir) / "model.onnx").is_file()


def test_cancel_stops_in_flight_trials(db_url: str, tmp_path: Path) -> None:
    settings = settings_for(db_url, tmp_path)
    spec = {**SPEC, "budget": {"trials": 10}}
    job_id = submit(db_url, spec)

    def cancel_after_first(n: int) -> None:
        if n == 1:
            with get_sessionmaker(db_url)() as s:
                job = s.get(Job, job_id)
                assert job is not None
                crud.request_cancel(session=s, job=job)

    executor = InlineExecutor(fail_numbers=set(), on_result=cancel_after_first)
    status = JobController(settings, executor, job_id, "test").run()
    assert status == JobStatus.cancelled
    assert executor.cancelled  # the in-flight task was cancelled
    study = load_study(db_url, job_id)
    states = [t.state for t in study.trials]
    assert OptunaState.RUNNING not in states
    assert states.count(OptunaState.COMPLETE) >= 1  # what completed is kept
    with get_sessionmaker(db_url)() as s:
        job = s.get(Job, job_id)
        assert job is not None and job.status == JobStatus.cancelled
        rows = s.scalars(select(Trial).where(Trial.job_id == job_id)).all()
        assert any(r.state == TrialState.cancelled for r in rows)


def test_interrupted_trials_fail_with_reason_on_restart(db_url: str, tmp_path: Path) -> None:
    settings = settings_for(db_url, tmp_path)
    spec = {**SPEC, "budget": {"trials": 1}}
    job_id = submit(db_url, spec)
    from service.scheduler.study import open_study

    study = open_study(db_url, job_id, JobSpec.model_validate(spec))
    orphan = study.ask()  # a scheduler died with this trial RUNNING
    with get_sessionmaker(db_url)() as s:
        s.add(Trial(job_id=job_id, number=orphan.number, candidate={}, candidate_hash=""))
        s.commit()
    status = JobController(settings, InlineExecutor(set()), job_id, "test").run()
    assert status == JobStatus.succeeded
    t = load_study(db_url, job_id).trials[orphan.number]
    assert t.state == OptunaState.FAIL and "interrupted" in t.user_attrs["error"]
    assert isinstance(optuna.__version__, str)


def test_device_failures_are_recorded_but_not_counted(db_url: str, tmp_path: Path) -> None:
    """A probe device that fails (ProbeTransientError) is not the candidate's fault: the trial
    is FAIL with kind "device", and it counts neither against max_failed nor trials_failed."""
    spec = {**SPEC, "budget": {"trials": 1, "max_failed": 0, "tune_s": 300}}
    job_id = submit(db_url, spec)
    executor = InlineExecutor(set(), device_fail_numbers=frozenset({0}))
    status = JobController(settings_for(db_url, tmp_path), executor, job_id, "test").run()
    assert status == JobStatus.succeeded
    failed = load_study(db_url, job_id).get_trials(states=(OptunaState.FAIL,))
    assert len(failed) == 1 and failed[0].user_attrs["fail_kind"] == "device"
    assert "RPC server gone" in failed[0].user_attrs["error"]
    with get_sessionmaker(db_url)() as s:
        job = s.get(Job, job_id)
        assert job is not None and (job.trials_complete, job.trials_failed) == (1, 0)


def test_front_is_verified_from_the_shipped_files(db_url: str, tmp_path: Path) -> None:
    """After the job, each Pareto bundle's own library is timed in a fresh process beside its
    dense parent and the canary; the card, the trial row and the front carry the numbers."""
    import json

    from service.scheduler.front import JobScoring, front

    settings = settings_for(db_url, tmp_path, verify=True)
    spec = {**SPEC, "budget": {"trials": 2, "tune_s": 300}}
    job_id = submit(db_url, spec)
    executor = InlineExecutor(fail_numbers=set())
    assert JobController(settings, executor, job_id, "test").run() == JobStatus.succeeded

    study = load_study(db_url, job_id)
    assert study.user_attrs["verification"]["status"] == "done"
    assert len(executor.verifications) >= 1
    scoring = JobScoring.from_spec(JobSpec.model_validate(spec).model_dump(mode="json"))
    points = front(study, scoring)
    assert points
    for p in points:
        v = p.verified["x86/local"]
        assert v.error is None and v.median_ms is not None and v.median_ms > 0
        assert v.windows == 2 and v.quiet == "lease"
        assert v.canary_ms is not None and v.normalized is not None
        assert v.dense_ms is not None and v.speedup_vs_dense is not None
        assert v.no_speedup == (v.speedup_vs_dense < 1.05)
        assert v.search_ms == p.trial.user_attrs["metrics"]["latency_ms"]["x86/local"]
        assert p.metrics.latency_ms["x86/local"] == v.median_ms  # the front uses verified
        with get_sessionmaker(db_url)() as s:
            row = crud.get_trial(session=s, job_id=job_id, number=p.trial.number)
            assert row is not None and row.verified is not None and row.bundle_dir
            card = json.loads((Path(row.bundle_dir) / "card.json").read_text())
        assert card["verified"]["latency"]["x86/local"]["median_ms"] == v.median_ms
        assert card["verified"]["size_ratio_vs_dense"] > 1  # 32-bit MLP vs 8-bit head at least
