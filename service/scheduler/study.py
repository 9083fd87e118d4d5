"""The Optuna study of a job, stored in the service database."""

from __future__ import annotations

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
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    population = max(4, min(20, spec.budget.trials // 3))
    return optuna.samplers.NSGAIISampler(population_size=population, seed=spec.seed)


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
