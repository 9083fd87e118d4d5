"""The Optuna study of a job, stored in the service database."""

from __future__ import annotations

from functools import cache
from typing import Any

import optuna
from optuna.storages._cached_storage import _CachedStorage
from optuna.trial import TrialState

from service.db.session import pg_timeouts
from service.scheduler import samplers
from service.schemas import JobSpec


@cache
def get_storage(url: str) -> optuna.storages.RDBStorage:
    """One RDBStorage per URL and process (two processes creating it on a fresh DB race)."""
    # room for every API thread (Optuna's default pool of 5 + 10 starved a burst of /pareto
    # reads), 5 kept open when idle
    kwargs: dict[str, Any] = {"pool_size": 5, "max_overflow": 35, "pool_timeout": 30}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs["connect_args"] = pg_timeouts(url)
        kwargs["pool_pre_ping"] = True
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


class JobStorage(_CachedStorage):
    """Optuna's cache of one study's trials (what ``optuna.create_study`` wraps an RDBStorage
    in), with one read made cheap: ``study.ask()`` looks for enqueued (WAITING) trials on
    every call, and the cache answers any read by first re-reading every unfinished trial
    from the database, params and attributes included. With 256 trials in flight that was
    about 0.27 s per ask, most of the scheduler's time (bench/scale.py). WAITING trials are
    asked of the database alone, filtered there; every other read is the cache's own.
    Optuna is pinned (5.0.0): a test checks that an enqueued trial is still popped."""

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Any = None,
    ) -> list[optuna.trial.FrozenTrial]:
        if states is not None and tuple(states) == (TrialState.WAITING,):
            return self._backend.get_all_trials(study_id, deepcopy=deepcopy, states=states)
        return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)


def study_name(job_id: int) -> str:
    return f"job-{job_id}"


def make_sampler(spec: JobSpec, drawn: int = 0) -> optuna.samplers.BaseSampler:
    """The job's seeded sampler (see :mod:`service.scheduler.samplers`), for a study that has
    ``drawn`` trials already."""
    return samplers.build(
        sampler_plan(spec),
        seed=resume_seed(spec.seed, drawn),
        trials=spec.budget.trials,
        fixed_params=dict(spec.fixed_params),
    )


def resume_seed(seed: int, drawn: int) -> int:
    """The seed of a sampler re-created after ``drawn`` trials: the job's own seed for a new
    study; for a resumed one a seed derived from both, so the re-created sampler continues
    with fresh draws instead of replaying its first ones (reproducible: the same history gives
    the same seed). Model-based samplers (TPE, GP, NSGA-II) re-derive their state from the
    trials themselves; only their random stream needs this."""
    if drawn == 0:
        return seed
    return (seed * 1_000_003 + drawn * 7_919) % (2**31 - 1)


def resume_sampler(study: optuna.Study, spec: JobSpec) -> None:
    """Give a study loaded with trials the sampler that continues it (see :func:`resume_seed`);
    the draws it starts from are recorded (study attribute ``sampler_resumed_at``)."""
    drawn = len(study.get_trials(deepcopy=False))
    if drawn:
        study.sampler = make_sampler(spec, drawn)
        study.set_user_attr("sampler_resumed_at", drawn)


def sampler_plan(spec: JobSpec) -> samplers.SamplerPlan:
    return samplers.plan(spec.sampler, spec.space, spec.budget.trials)


def open_study(url: str, job_id: int, spec: JobSpec) -> optuna.Study:
    """Create the job's study (or load it after a restart) with metric names set."""
    study = optuna.create_study(
        study_name=study_name(job_id),
        storage=JobStorage(get_storage(url)),
        directions=spec.directions(),  # type: ignore[arg-type]  # validated literals
        sampler=make_sampler(spec),
        load_if_exists=True,
    )
    if study.metric_names != spec.metric_names():
        study.set_metric_names(spec.metric_names())
    study.set_user_attr("hwnas_job_id", job_id)
    study.set_user_attr("hwnas_spec", spec.model_dump(mode="json"))
    study.set_user_attr("sampler", sampler_plan(spec).public())
    return study


def delete_study(url: str, job_id: int) -> bool:
    """Delete job ``job_id``'s study; False when it has none."""
    try:
        optuna.delete_study(study_name=study_name(job_id), storage=get_storage(url))
    except KeyError:
        return False
    return True


def load_study(url: str, job_id: int) -> optuna.Study:
    return optuna.load_study(study_name=study_name(job_id), storage=get_storage(url))


def open_study_if_any(url: str, job_id: int) -> optuna.Study | None:
    """Job ``job_id``'s study, or None when it has none yet."""
    try:
        return load_study(url, job_id)
    except KeyError:
        return None


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
