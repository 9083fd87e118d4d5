"""The flat encoding: every trial carries every gene, and the space's candidate is unchanged."""

from __future__ import annotations

import optuna

from search_spaces import SpaceContext, genes, get_space, sample_flat


def test_every_trial_carries_every_gene_and_inactive_ones_are_ignored() -> None:
    space = get_space("small_joint")(SpaceContext(input_shape=(1, 8, 8), num_classes=10))
    g = genes(space)
    assert "family" in g and "cnn.layer2.wbits" in g and "mlp.layer2.abits" in g
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        cand = sample_flat(space, trial)
        assert set(trial.params) == set(g)  # fixed length
        native = optuna.trial.FixedTrial(dict(trial.params))
        assert space.sample(native).structural_hash() == cand.structural_hash()
        study.tell(trial, 0.0)


def test_genes_follow_the_jobs_choices() -> None:
    space = get_space("small_joint")(
        SpaceContext(input_shape=(1, 8, 8), num_classes=10),
        {"family": ["mlp"], "mlp.depth": [1]},
    )
    g = genes(space)
    assert not any(k.startswith("cnn.") for k in g)
    assert "mlp.layer1.width" not in g and g["mlp.depth"] == (1,)
