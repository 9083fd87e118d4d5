"""Training helpers: fixed batches and subsets, (distilled) fitting, the parent's cache key."""

from __future__ import annotations

import math

import numpy as np
import torch

from tests.workers.factories import candidate, net_of
from workers.data import Split
from workers.train import Recipe, accuracy, batches, fit, subset


def _split(n: int = 96, shape: tuple[int, ...] = (64,)) -> Split:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, *shape)).astype(np.float32)
    y = (np.arange(n) % 10).astype(np.int64)
    return Split(x, y, np.arange(n, dtype=np.int64) * 3)


def test_batches_are_a_fixed_shuffle_for_a_seed() -> None:
    data = _split()
    first = batches(data, 16, 3, seed=1)
    assert [len(x) for x, _ in first] == [16, 16, 16]
    again = batches(data, 16, 3, seed=1)
    other = batches(data, 16, 3, seed=2)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0][0], other[0][0])
    assert len(batches(data, 64, 10)) == 2  # no more than the data holds


def test_subset_is_fixed_sorted_and_keeps_source_indices() -> None:
    data = _split()
    part = subset(data, 20, seed=3)
    assert len(part) == 20
    assert part.index is not None and data.index is not None
    assert list(part.index) == sorted(part.index)
    rows = part.index // 3  # index maps back to the rows of the source data
    np.testing.assert_array_equal(part.x, data.x[rows])
    np.testing.assert_array_equal(part.index, subset(data, 20, seed=3).index)
    assert subset(data, None) is data and subset(data, 1000) is data


def test_fit_learns_and_distillation_runs() -> None:
    data = _split()
    cand = candidate("mlp")
    recipe = Recipe(batch_size=32, lr=1e-2)
    student = net_of(cand)
    before = accuracy(student, data)
    loss = fit(student, data, epochs=8, recipe=recipe)
    assert math.isfinite(loss)
    assert accuracy(student, data) > max(before, 0.5)  # memorises 96 random points
    assert not student.training

    teacher = student
    kd_student = net_of(candidate("mlp", prune=0.5))
    feat = Recipe(batch_size=32, feature_kd=1.0)
    assert math.isfinite(fit(kd_student, data, epochs=1, recipe=feat, teacher=teacher, lr=1e-3))
    assert math.isnan(fit(kd_student, data, epochs=0, recipe=recipe))


def test_parent_cache_key_ignores_compression_settings() -> None:
    base = Recipe()
    compression = Recipe(
        prune_criterion="taylor", quant="qat", kd=False, finetune_epochs=1, rank_energy=0.9
    )
    assert base.parent_part() == compression.parent_part()
    assert Recipe(epochs=3).parent_part() != base.parent_part()
