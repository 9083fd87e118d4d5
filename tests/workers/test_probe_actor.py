"""The warm probe actor: one per (profile, node), reused across calls, errors come back typed."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

from search_spaces import Candidate, Stage
from workers.models import build_model, example_input
from workers.probe import ProbeError, ProbeOptions
from workers.probe.actor import NAMESPACE, actor_name, probe_warm

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    # address="local": a new instance, never a `ray start` cluster left on the host
    ray.init(address="local", num_cpus=1, include_dashboard=False, object_store_memory=128 * 2**20)
    try:
        yield
    finally:
        ray.shutdown()


def _mlp(width: int) -> Candidate:
    return Candidate(
        space="test", family="mlp", input_shape=(16,), num_classes=4, stages=(Stage(width=width),)
    )


def test_actor_is_reused_and_errors_keep_their_type(ray_local: None) -> None:
    import ray

    @ray.remote(num_cpus=1)
    def trial(width: int) -> dict[str, object]:
        cand = _mlp(width)
        torch.manual_seed(0)
        return probe_warm(
            build_model(cand).eval(), example_input(cand), "x86/local", options=ProbeOptions()
        )

    first = ray.get(trial.remote(8))
    second = ray.get(trial.remote(16))
    assert first.median_ms > 0 and second.median_ms > 0
    assert (first.probe_worker_calls, second.probe_worker_calls) == (1, 2)
    node = ray.get_runtime_context().get_node_id()
    assert ray.get_actor(actor_name("x86/local", node), namespace=NAMESPACE)

    @ray.remote(num_cpus=1)
    def bad() -> None:
        cand = _mlp(8)
        probe_warm(build_model(cand).eval(), torch.zeros(1, 3), "x86/local", options=ProbeOptions())

    with pytest.raises(ProbeError, match="lowering for x86/local failed"):
        ray.get(bad.remote())
