"""No candidate is trained twice in a job: a sampler's repeat is refused and asked again, a
resumed seeded sampler's replayed draws are skipped, an exhausted space ends the job, and the
front lists a candidate once even in a study that holds it twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState as OptunaState

from service.db import crud
from service.db.models import Job, JobStatus
from service.db.queue import claim_job
from service.db.session import get_sessionmaker
from service.scheduler.controller import JobController
from service.scheduler.front import JobScoring, front
from service.scheduler.study import load_study
from tests.service.inline import InlineExecutor, settings_for, submit

BASE: dict[str, Any] = {
    "dataset": "digits",
    "space": "mlp_small",
    "space_overrides": {"depth": [1], "width": [32, 64], "abits": [32]},
    "profiles": ["x86/local"],
    "objectives": ["accuracy", "size"],
    "budget": {"trials": 2, "tune_s": 0},
    "training": {"epochs": 2, "finetune_epochs": 1},
    "tuning": "off",
    "sampler": "random",
    "seed": 5,
}
ONE_CANDIDATE = {  # every dimension pinned: the space holds exactly one candidate
    "depth": [1],
    "width": [32],
    "wbits": [8],
    "codebook_bits": [0],
    "abits": [32],
    "sparsity": [0.0],
    "prune": [0.0],
    "rank": [1.0],
    "head_wbits": [8],
    "kd_alpha": [0.5],
    "kd_relation": [0],
}


def _run(db_url: str, tmp_path: Path, job_id: int) -> JobStatus:
    return JobController(
        settings_for(db_url, tmp_path), InlineExecutor(set()), job_id, "test"
    ).run()


def _complete_hashes(study: optuna.Study) -> list[str]:
    return [
        t.user_attrs["candidate_hash"] for t in study.get_trials(states=(OptunaState.COMPLETE,))
    ]


def test_an_exhausted_space_trains_its_one_candidate_once(db_url: str, tmp_path: Path) -> None:
    job_id = submit(db_url, {**BASE, "space_overrides": ONE_CANDIDATE, "budget": {"trials": 3}})
    assert _run(db_url, tmp_path, job_id) == JobStatus.succeeded
    study = load_study(db_url, job_id)
    assert len(_complete_hashes(study)) == 1
    dups = [t for t in study.trials if t.user_attrs.get("fail_kind") == "duplicate"]
    assert dups and all(t.state == OptunaState.FAIL for t in dups)
    assert {t.user_attrs["duplicate_of"] for t in dups} == {0}
    assert any(t.user_attrs.get("sampled_by") is None for t in dups)  # the sampler's own
    assert "space is exhausted" in study.user_attrs["stopped_early"]
    with get_sessionmaker(db_url)() as s:
        job = s.get(Job, job_id)
        assert job is not None and job.trials_failed == 0  # refusals are not failures
        rows, total = crud.list_trials(session=s, job_id=job_id, skip=0, limit=100)
        assert total == 1  # nothing was trained but the one candidate


def test_a_resumed_seeded_sampler_draws_on_instead_of_replaying(
    db_url: str, tmp_path: Path
) -> None:
    job_id = submit(db_url, BASE)
    assert _run(db_url, tmp_path, job_id) == JobStatus.succeeded
    first = _complete_hashes(load_study(db_url, job_id))
    with get_sessionmaker(db_url)() as s:  # extend: a new controller, a new seeded sampler
        job = s.get(Job, job_id)
        assert job is not None
        crud.extend_job(session=s, job=job, trials=2, tune_s=0)
        assert claim_job(session=s, worker_id="test", stale_after_s=60) is not None
    assert _run(db_url, tmp_path, job_id) == JobStatus.succeeded
    study = load_study(db_url, job_id)
    hashes = _complete_hashes(study)
    assert len(hashes) == 4 and len(set(hashes)) == 4, hashes
    # the re-created sampler is seeded from the job's seed and the trials so far
    # (study.resume_seed): it never replays trial 0's and 1's draws, so none is refused
    replayed = [t for t in study.trials if t.user_attrs.get("fail_kind") == "duplicate"]
    assert replayed == [] and hashes[:2] == first
    assert study.user_attrs["sampler_resumed_at"] == 2


def test_the_front_lists_a_candidate_trained_twice_once() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    for acc in (0.9, 0.9, 0.8):
        attrs = {
            "candidate_hash": "same" if acc == 0.9 else "other",
            "metrics": {
                "accuracy": acc,
                "size_bytes": 1000 if acc == 0.9 else 500,
                "macs": 1,
                "bitops": 1,
                "latency_ms": {},
            },
        }
        study.add_trial(
            optuna.trial.create_trial(
                values=[acc, attrs["metrics"]["size_bytes"]],  # type: ignore[index]
                user_attrs=attrs,
                params={},
                distributions={},
            )
        )
    scoring = JobScoring(["accuracy", "size_bytes"], ["maximize", "minimize"], [], False)
    points = front(study, scoring)
    assert sorted(p.trial.number for p in points) == [0, 2]
