"""Every sampler a job may ask for runs on a joint conditional space with constraints, and
``"auto"`` resolves per space and budget."""

from __future__ import annotations

import optuna
import pytest

from search_spaces import SpaceContext, get_space
from service.scheduler import samplers
from service.scheduler.proposals import Proposer


@pytest.mark.parametrize("name", ["tpe", "nsga2", "gp", "random"])
def test_every_sampler_searches_a_conditional_space_with_constraints(name: str) -> None:
    space = get_space("small_joint")(SpaceContext(input_shape=(1, 8, 8), num_classes=10))
    plan = samplers.plan(name, "small_joint", 8)
    study = optuna.create_study(
        directions=["maximize", "minimize"],
        sampler=samplers.build(plan, seed=0, trials=8),
    )
    proposer = Proposer(space, flat=plan.flat, seed=0)
    hashes = set()
    for _ in range(8):
        trial, cand = proposer.propose(study)
        hashes.add(cand.structural_hash())
        width = sum(s.width for s in cand.stages)
        trial.set_constraint("width", width - 100.0)  # feasible: total width <= 100
        study.tell(trial, [width / 500, float(len(cand.stages))])
    assert len(hashes) == 8  # never the same candidate twice
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 8
    if plan.flat:  # every trial carries every gene
        assert len({len(t.params) for t in complete}) == 1
    feasible = [t for t in complete if t.constraints["width"] <= 0]
    assert feasible  # some were feasible, so the front holds feasible trials only
    assert study.best_trials and all(t.constraints["width"] <= 0 for t in study.best_trials)


def test_auto_resolves_per_space_and_budget() -> None:
    for space in ("small_joint", "cnn_joint"):
        for trials in (10, 50, 200, 5000):
            plan = samplers.plan("auto", space, trials)
            assert plan.name in samplers.FLAT and plan.reason.startswith("auto")
    plan = samplers.plan("auto", "resnet_joint", 50)
    assert plan.name == samplers.DEFAULT_AUTO and "not measured" in plan.reason
    assert samplers.plan("nsga2", "small_joint", 50).flat
    assert not samplers.plan("tpe", "small_joint", 50).flat


def test_nsga2_population_grows_with_the_budget() -> None:
    assert samplers.nsga2_population(20) == 8
    assert samplers.nsga2_population(200) == 20
    assert samplers.nsga2_population(10_000) == 50
