"""Two pre-filter bugs, each reproduced first: a cached pre-filter probe crashed the trial, and the
pre-filter probed a Tucker-2 structure for a job that factorizes convolutions by SVD."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from workers.evaluate import evaluate
from workers.records import EvalRequest, EvalResult

RECIPE = {"epochs": 1, "finetune_epochs": 0, "qat_epochs": 0, "seed": 0}


def _run(cand: dict[str, Any], tmp_path: Path, bundle: str, **recipe: Any) -> EvalResult:
    req = {
        "candidate": cand,
        "dataset": "digits",
        "profiles": ["x86/local"],
        "bundle_dir": str(tmp_path / bundle),
        "cache_dir": str(tmp_path / "parents"),
        "probe_cache_dir": str(tmp_path / "probe-cache"),
        "recipe": {**RECIPE, **recipe},
        "check_samples": 64,
        # a bound every candidate meets: the pre-filter probes but never rejects
        "constraints": [{"text": "size <= 1 GB", "metric": "size_bytes", "op": "<=", "bound": 1e9}],
    }
    return evaluate(EvalRequest.model_validate(req))


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Any:
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_prefilter_probe_cache_hit_does_not_fail_the_trial(tmp_path: Path) -> None:
    cand = {
        "space": "mlp_small",
        "family": "mlp",
        "input_shape": [64],
        "num_classes": 10,
        "stages": [{"width": 32, "wbits": 8, "abits": 32}],
        "head_wbits": 8,
    }
    first = _run(cand, tmp_path, "a")
    assert first.prefiltered is False
    # the same structure again: its pre-filter probe is now a probe-cache hit
    second = _run(cand, tmp_path, "b")
    assert second.prefiltered is False and second.prefilter is not None
    hit = second.prefilter.latency["x86/local"]
    assert hit.cache_hit is True and hit.latency_source == "cache"
    assert second.device_s["x86/local"] > 0
    # the trained candidate's own library is timed, not copied from the cache
    assert second.latency["x86/local"].latency_source == "measured"


def test_prefilter_lowers_the_jobs_conv_decomposition(tmp_path: Path) -> None:
    """With ``conv_decomposition: svd`` the pre-filter must probe the SVD structure the trained
    candidate has: then the probe after training finds the pre-filter's measurement."""
    cand = {
        "space": "cnn_small",
        "family": "cnn",
        "input_shape": [1, 8, 8],
        "num_classes": 10,
        "stages": [{"width": 16, "kernel": 3, "stride": 2, "rank": 0.25}],
        "head_wbits": 32,
    }
    out = _run(cand, tmp_path, "svd", conv_decomposition="svd")
    assert out.prefiltered is False and out.prefilter is not None
    pre, post = out.prefilter.latency["x86/local"], out.latency["x86/local"]
    assert pre.structure == post.structure
    assert post.cache_hit is True
