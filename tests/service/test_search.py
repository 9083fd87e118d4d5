"""The search engine's controller features with real training and TVM probes (in-process
executor): constraints and the hardware pre-filter, successive halving, re-runs of interrupted
trials, extend, warm start, TPE and pinned parameters, and the job report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState as OptunaState

from search_spaces import SpaceContext, get_space
from service.api.report import job_report
from service.db import crud
from service.db.models import Job, JobStatus, TrialState
from service.db.queue import claim_job
from service.db.session import get_sessionmaker
from service.scheduler.controller import JobController
from service.scheduler.fence import Fence
from service.scheduler.records import TrialRecords
from service.scheduler.study import load_study, open_study
from service.schemas import JobSpec
from tests.service.inline import InlineExecutor, settings_for, submit

BASE: dict[str, Any] = {
    "dataset": "digits",
    "space": "mlp_small",
    "space_overrides": {"depth": [1], "width": [32, 64], "abits": [32]},
    "profiles": ["x86/local"],
    "budget": {"trials": 2, "tune_s": 0},
    "training": {"epochs": 2, "finetune_epochs": 1},
    "tuning": "off",
    "seed": 2,
}


def _run(db_url: str, tmp_path: Path, job_id: int) -> JobStatus:
    return JobController(
        settings_for(db_url, tmp_path), InlineExecutor(set()), job_id, "test"
    ).run()


def _rows(db_url: str, job_id: int) -> list[Any]:
    with get_sessionmaker(db_url)() as s:
        rows, _ = crud.list_trials(session=s, job_id=job_id, skip=0, limit=1000)
        return rows


def test_prefilter_rejects_without_training_and_front_is_feasible(
    db_url: str, tmp_path: Path
) -> None:
    spec = {
        **BASE,
        "space_overrides": {
            **BASE["space_overrides"],
            "width": [32, 256, 512],
            "wbits": [32],
            "codebook_bits": [0],
            "sparsity": [0.0],
        },
        "constraints": ["size <= 20 KB"],  # latency is an objective, not a constraint
        "sampler": "random",
    }
    job_id = submit(db_url, spec)
    assert _run(db_url, tmp_path, job_id) == JobStatus.succeeded
    study = load_study(db_url, job_id)
    rows = _rows(db_url, job_id)
    rejected = [r for r in rows if r.state == TrialState.rejected]
    complete = [r for r in rows if r.state == TrialState.complete]
    assert len(complete) == 2 and rejected, [r.state for r in rows]
    for r in rejected:
        (run,) = r.timings["runs"]
        assert set(run["timings"]) == {"prefilter_s"}  # never trained
        assert r.metrics["size_bytes"] > 20_000 and "'size <= 20 KB' broken by" in r.error
        t = study.trials[r.number]
        assert t.state == OptunaState.COMPLETE and t.user_attrs["prefiltered"] is True
        assert t.user_attrs["feasible"] is False
    for r in complete:
        assert r.metrics["size_bytes"] <= 20_000
        (run,) = r.timings["runs"]
        assert {"prefilter_s", "parent_s", "compress_s", "probe_s"} <= set(run["timings"])
        # the pre-filter probed the structure; the trained model's timing came from the cache
        assert run["probe_cache_hits"][-1] is True
    assert {t.number for t in study.best_trials} <= {r.number for r in complete}
    report = job_report(job_id, rows)
    assert report.prefilter["rejected"] == len(rejected)
    assert report.prefilter["train_s_saved_est"] > 0
    assert report.cache["probe"]["hits"] >= len(complete)
    assert report.cpu_s["total"] > 0 and report.device_s["x86/local"] > 0


def test_accuracy_constraint_keeps_infeasible_off_the_front(db_url: str, tmp_path: Path) -> None:
    spec = {**BASE, "budget": {"trials": 1, "tune_s": 0}, "constraints": ["accuracy >= 99.9 %"]}
    job_id = submit(db_url, spec)
    assert _run(db_url, tmp_path, job_id) == JobStatus.succeeded
    study = load_study(db_url, job_id)
    (t,) = study.get_trials(states=(OptunaState.COMPLETE,))
    assert t.user_attrs["constraints"]["accuracy >= 99.9 %"] > 0
    assert study.best_trials == []  # /pareto and /best serve feasible points only


def test_successive_halving_promotes_by_pareto_rank(db_url: str, tmp_path: Path) -> None:
    spec = {
        **BASE,
        "budget": {"trials": 2, "tune_s": 0},
        "fidelity": {"min_fraction": 0.5, "eta": 2},
        "training": {"epochs": 4, "finetune_epochs": 2},
    }
    job_id = submit(db_url, spec)
    assert _run(db_url, tmp_path, job_id) == JobStatus.succeeded
    study = load_study(db_url, job_id)
    complete = study.get_trials(states=(OptunaState.COMPLETE,))
    pruned = study.get_trials(states=(OptunaState.PRUNED,))
    assert len(complete) == 2 and pruned
    for t in complete:  # full-budget results only; the rung-0 result kept beside them
        assert [r["rung"] for r in t.user_attrs["rungs"]] == [0]
        assert [r["rung"] for r in t.user_attrs["cost"]["runs"]] == [0, 1]
    rows = {r.number: r for r in _rows(db_url, job_id)}
    for t in pruned:
        assert rows[t.number].state == TrialState.pruned and rows[t.number].bundle_dir is None
        assert len(t.user_attrs["rungs"]) == 1


def test_interrupted_trials_rerun_once_with_same_params(db_url: str, tmp_path: Path) -> None:
    spec = {**BASE, "budget": {"trials": 2, "tune_s": 0}}
    job_id = submit(db_url, spec)
    job = JobSpec.model_validate(spec)
    study = open_study(db_url, job_id, job)
    orphan = study.ask()  # a scheduler died with this trial RUNNING
    space = get_space("mlp_small")(
        SpaceContext(input_shape=(1, 8, 8), num_classes=10), job.choices()
    )
    space.sample(orphan)
    records = TrialRecords(Fence(get_sessionmaker(db_url), job_id, "test", None), job_id)
    records.create(orphan.number, {}, "")
    records.requeue(study, orphan.number, orphan.params)  # ... after enqueueing its re-run
    assert _run(db_url, tmp_path, job_id) == JobStatus.succeeded
    study = load_study(db_url, job_id)
    assert study.trials[orphan.number].state == OptunaState.FAIL
    assert "interrupted" in study.trials[orphan.number].user_attrs["error"]
    reruns = [t for t in study.trials if t.user_attrs.get("retry_of") == orphan.number]
    assert len(reruns) == 1  # not enqueued a second time by the restart
    assert reruns[0].state == OptunaState.COMPLETE
    assert {k: reruns[0].params[k] for k in orphan.params} == orphan.params
    assert len(study.get_trials(states=(OptunaState.COMPLETE,))) == 2  # exactly the budget


def test_extend_adds_trials_and_warm_start_enqueues_the_front(db_url: str, tmp_path: Path) -> None:
    first = submit(db_url, BASE)
    assert _run(db_url, tmp_path, first) == JobStatus.succeeded
    sessions = get_sessionmaker(db_url)
    with sessions() as s:
        job = s.get(Job, first)
        assert job is not None
        crud.extend_job(session=s, job=job, trials=1, tune_s=10)
        assert job.status == JobStatus.queued and job.spec["budget"]["trials"] == 3
        assert claim_job(session=s, worker_id="test", stale_after_s=60) is not None
    assert _run(db_url, tmp_path, first) == JobStatus.succeeded
    source = load_study(db_url, first)
    assert len(source.get_trials(states=(OptunaState.COMPLETE,))) == 3

    second = submit(db_url, {**BASE, "warm_start_from": first, "seed": 9})
    assert _run(db_url, tmp_path, second) == JobStatus.succeeded
    front = sorted(source.best_trials, key=lambda t: t.number)[:2]
    warm = load_study(db_url, second).trials[: len(front)]
    assert [t.params for t in warm] == [t.params for t in front]
    assert all(t.user_attrs["warm_start_from"].startswith(f"{first}-") for t in warm)


def test_a_space_that_cannot_sample_fails_the_job_instead_of_spinning(
    db_url: str, tmp_path: Path
) -> None:
    job_id = submit(db_url, {**BASE, "budget": {"trials": 2, "max_failed": 1, "tune_s": 0}})
    study = open_study(db_url, job_id, JobSpec.model_validate(BASE))
    t = study.ask()
    t.suggest_categorical("depth", [1, 2, 3, 4])  # "depth" now has another distribution
    study.tell(t, state=OptunaState.FAIL)
    assert _run(db_url, tmp_path, job_id) == JobStatus.failed  # every sample raises
    with get_sessionmaker(db_url)() as s:
        job = s.get(Job, job_id)
        assert job is not None and job.trials_failed == 2 and "max_failed" in (job.error or "")


@pytest.mark.parametrize("width", [64, 16], ids=["in-the-choices", "outside-the-overrides"])
def test_tpe_with_pinned_architecture(db_url: str, tmp_path: Path, width: int) -> None:
    """A pinned value runs whether or not the job's choices hold it (16 is allowed for width,
    but the overrides search [32, 64]): pinning is how a user fixes what the search leaves."""
    spec = {
        **BASE,
        "sampler": "tpe",
        "fixed_params": {"depth": 1, "layer0.width": width},
        "objectives": ["accuracy", "bitops"],
    }
    job_id = submit(db_url, spec)
    assert _run(db_url, tmp_path, job_id) == JobStatus.succeeded
    study = load_study(db_url, job_id)
    assert study.metric_names == ["accuracy", "bitops"]
    complete = study.get_trials(states=(OptunaState.COMPLETE,))
    assert len(complete) == 2
    for t in complete:
        assert t.params["layer0.width"] == width
        assert t.user_attrs["candidate"]["stages"][0]["width"] == width
        assert t.values[1] > 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"constraints": ["latency <= fast"]}, "constraints[0]: cannot parse"),
        ({"constraints": ["size >= 1 KB"]}, "size constraints are '<=' bounds"),
        ({"constraints": ["latency@arm/nowhere <= 2 ms"]}, "unknown profile 'arm/nowhere'"),
        ({"constraints": ["size <= 1e999"]}, "two exponent digits"),
        ({"constraints": ["size <= 2 parsecs"]}, "unknown unit 'parsecs'"),
        ({"constraints": ["accuracy >= 2"]}, "accuracy bound must lie in [0, 1]"),
        (
            {"fixed_params": {"layer0.width": 7}},
            "fixed_params.layer0.width: 7 is not allowed for width",
        ),
        ({"fixed_params": {"nonsense": 1}}, "'nonsense' is not a parameter"),
        ({"sampler": "cmaes"}, "sampler"),
        ({"fidelity": {"min_fraction": 1.5}}, "min_fraction"),
        ({"objectives": ["accuracy", "flops"]}, "unknown objective 'flops'"),
    ],
)
def test_bad_search_settings_are_refused_by_field(change: dict[str, Any], message: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=None) as e:
        JobSpec.model_validate({**BASE, **change})
    assert message in str(e.value)


def test_constraint_units_parse() -> None:
    job = JobSpec.model_validate(
        {
            **BASE,
            "constraints": ["latency <= 250 us", "size <= 0.5 MiB", "accuracy >= 85%", "macs<=2M"],
        }
    )
    got = {c.metric: (c.op, c.bound) for c in job.parsed_constraints()}
    assert got == {
        "latency_ms@x86/local": ("<=", 0.25),
        "size_bytes": ("<=", 2**19),
        "accuracy": (">=", 0.85),
        "macs": ("<=", 2e6),
    }


def test_a_rung_a_rounding_step_below_full_is_not_a_rung() -> None:
    from service.schemas import Fidelity

    assert Fidelity(min_fraction=0.333333, eta=3).rungs() == [0.333333, 1.0]
    assert Fidelity(min_fraction=0.25, eta=2).rungs() == [0.25, 0.5, 1.0]
