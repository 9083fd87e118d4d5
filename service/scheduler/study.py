"""The Optuna study of a job, stored in the service database."""

from __future__ import annotations

import warnings
from functools import cache
from typing import Any

import optuna

from service.schemas import JobCreate


@cache
def get_storage(url: str) -> optuna.storages.RDBStorage:
    """One RDBStorage per URL and process (two processes creating it on a fresh DB race)."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs = {"connect_args": {"timeout": 30}}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def study_name(job_id: int) -> str:
    return f"job-{job_id}"


def make_sampler(spec: JobCreate) -> optuna.samplers.BaseSampler:
    """The job's seeded sampler. Constraints reach it through ``trial.set_constraint`` (Optuna
    5 reads them from the trial; ``constraints_func`` is deprecated there)."""
    with warnings.catch_warnings():  # TPE's group / PartialFixedSampler are "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _make_sampler(spec)


def _make_sampler(spec: JobCreate) -> optuna.samplers.BaseSampler:
    sampler: optuna.samplers.BaseSampler
    if spec.sampler == "random":
        sampler = optuna.samplers.RandomSampler(seed=spec.seed)
    elif spec.sampler == "tpe":
        sampler = optuna.samplers.TPESampler(
            seed=spec.seed,
            multivariate=True,
            group=True,  # the spaces are conditional (family, depth)
            constant_liar=True,  # K trials in flight
            n_startup_trials=max(4, min(10, spec.budget.trials // 5)),
        )
    else:
        population = max(4, min(20, spec.budget.trials // 3))
        sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=spec.seed)
    if spec.fixed_params:
        sampler = optuna.samplers.PartialFixedSampler(dict(spec.fixed_params), sampler)
    return sampler


def open_study(url: str, job_id: int, spec: JobCreate) -> optuna.Study:
    """Create the job's study (or load it after a restart) with metric names set."""
    study = optuna.create_study(
        study_name=study_name(job_id),
        storage=get_storage(url),
        directions=spec.directions(),  # type: ignore[arg-type]  # validated literals
        sampler=make_sampler(spec),
        load_if_exists=True,
    )
    if study.metric_names != spec.metric_names():
        study.set_metric_names(spec.metric_names())
    study.set_user_attr("hwnas_job_id", job_id)
    study.set_user_attr("hwnas_spec", spec.model_dump(mode="json"))
    return study


def load_study(url: str, job_id: int) -> optuna.Study:
    return optuna.load_study(study_name=study_name(job_id), storage=get_storage(url))


def warm_start(study: optuna.Study, url: str, source_job_id: int, limit: int) -> int:
    """Enqueue the feasible Pareto front of job ``source_job_id`` (at most ``limit`` trials)
    as the first trials of ``study``, once. Returns how many were enqueued."""
    if "warm_started_from" in study.user_attrs:
        return 0
    source = load_study(url, source_job_id)
    front = sorted(
        (
            t
            for t in source.best_trials
            if t.state == optuna.trial.TrialState.COMPLETE and not t.user_attrs.get("prefiltered")
        ),
        key=lambda t: t.number,
    )[:limit]
    for t in front:
        # skip_if_exists: a restart between these calls and the marker below adds nothing twice
        study.enqueue_trial(
            t.params,
            user_attrs={"warm_start_from": f"{source_job_id}-{t.number}"},
            skip_if_exists=True,
        )
    study.set_user_attr("warm_started_from", {"job": source_job_id, "trials": len(front)})
    return len(front)
