"""Hardware pre-filter: latency, size and compute of a candidate's structure, before training.

The compressed structure (channels kept, ranks, bit-widths) is fixed by the candidate, so an
untrained model compressed the same way has the deployed size, MACs and latency of the trained
one. A candidate that breaks a hard constraint on those is rejected here, without training.
The probe of the structure also fills the probe cache (timing is keyed by structure, not
weights), so a candidate that passes gets its latency from the cache after training.
"""

from __future__ import annotations

from typing import Any

import torch

from search_spaces import Candidate
from workers.bounds import Constraint
from workers.compress.pack import packed_size
from workers.cost import compute_cost
from workers.models import example_input
from workers.probe import ProbeOptions
from workers.probe.actor import probe_warm
from workers.probe.structure import structural_model

_CHECK = 32  # inputs for the compiled-vs-PyTorch numerics check of the untrained structure


def prefilter(
    cand: Candidate, constraints: list[Constraint], profiles: list[str], options: ProbeOptions
) -> dict[str, Any]:
    """Measure what ``constraints`` bound on the structure of ``cand``.

    Returns ``metrics`` (``size_bytes``, ``macs``, ``bitops``, ``latency_ms`` per profile),
    ``latency`` (probe stats), ``violations`` (constraint text -> relative excess, only the
    broken ones) and ``rejected`` (True when any is broken). A latency from a partly untuned
    probe never rejects: untuned code is slower than what the trained candidate would get.
    """
    net = structural_model(cand)
    example = example_input(cand)
    metrics: dict[str, Any] = {"size_bytes": packed_size(net), **compute_cost(net, example)}
    latency: dict[str, dict[str, Any]] = {}
    g = torch.Generator().manual_seed(0)
    check = torch.randn(_CHECK, *example.shape[1:], generator=g)
    for name in profiles:  # every profile: a rejected trial still reports all its objectives
        latency[name] = probe_warm(net, example, name, options=options, check_inputs=check)
    metrics["latency_ms"] = {p: st["median_ms"] for p, st in latency.items()}
    violations: dict[str, float] = {}
    for c in constraints:
        metric = c.metric
        if metric.startswith("latency_ms@"):
            st = latency[metric.split("@", 1)[1]]
            if st["partial"]:
                continue
            value = float(st["median_ms"])
        else:
            value = float(metrics[metric])
        v = c.violation(value)
        if v > 0:
            violations[c.text] = round(v, 6)
    return {
        "metrics": metrics,
        "latency": latency,
        "violations": violations,
        "rejected": bool(violations),
    }
