"""JobStorage: ask() finds enqueued trials without the cache re-reading every trial in flight,
and everything else reads as Optuna's own cache does (on SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState

from service.scheduler.study import JobStorage, get_storage


def _study(url: str) -> tuple[optuna.Study, JobStorage]:
    storage = JobStorage(get_storage(url))
    study = optuna.create_study(
        study_name="storage-test", storage=storage, sampler=optuna.samplers.RandomSampler(seed=0)
    )
    return study, storage


def test_ask_pops_enqueued_trials_first(db_url: str) -> None:
    study, _ = _study(db_url)
    running = [study.ask() for _ in range(3)]
    for t in running:
        t.suggest_int("x", 0, 100)
    study.enqueue_trial({"x": 42})
    popped = study.ask()
    assert popped.suggest_int("x", 0, 100) == 42
    fresh = study.ask()
    assert fresh.number == popped.number + 1
    assert "fixed_params" not in study.trials[fresh.number].system_attrs
    study.tell(running[0], 1.0)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states.count(TrialState.RUNNING) == 4 and states.count(TrialState.COMPLETE) == 1


def test_ask_does_not_reread_trials_in_flight(db_url: str) -> None:
    study, storage = _study(db_url)
    for _ in range(20):
        study.ask().suggest_int("x", 0, 100)
    reads: list[Any] = []
    backend = storage._backend
    real = backend._get_trials

    def counted(study_id: int, states: Any, included: set[int], greater: int) -> Any:
        reads.append(included)
        return real(study_id, states, included, greater)

    backend._get_trials = counted  # type: ignore[method-assign]
    try:
        study.ask()
    finally:
        backend._get_trials = real  # type: ignore[method-assign]
    # Optuna's cache would read the 20 unfinished trials by id; the WAITING read asks for none
    assert all(not ids for ids in reads), reads
    # and reads of other states still see the trials in flight
    assert len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))) == 21
