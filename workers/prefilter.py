"""Hardware pre-filter: latency, size and compute of a candidate's structure, before training.

The compressed structure (channels kept, ranks, bit-widths) is fixed by the candidate, so an
untrained model compressed the same way has the deployed size, MACs and latency of the trained
one. A candidate that breaks a hard constraint on those is rejected here, without training.
The probe of the structure also fills the probe cache (timing is keyed by structure, not
weights). The verdict comes from :func:`workers.scoring.rejections`, the same scoring the
controller tells Optuna.
"""

from __future__ import annotations

import torch

from search_spaces import Candidate
from workers.compress.pack import packed_size
from workers.cost import compute_cost
from workers.models import example_input
from workers.probe import ProbeOptions
from workers.probe.actor import probe_warm
from workers.probe.structure import structural_model
from workers.records import Metrics, NetworkSource, PrefilterResult
from workers.scoring import Constraint, rejections

_CHECK = 32  # inputs for the compiled-vs-PyTorch numerics check of the untrained structure


def prefilter(
    cand: Candidate,
    constraints: list[Constraint],
    profiles: list[str],
    options: ProbeOptions,
    *,
    conv_method: str = "tucker2",
    network: NetworkSource | None = None,
) -> PrefilterResult:
    """Measure what ``constraints`` bound on the structure of ``cand`` (factorized with the
    job's ``conv_method``, so it is the structure the trained candidate will have).

    Every profile is probed: a rejected trial still reports all its objectives. A latency from
    a partly untuned probe never rejects.
    """
    net = structural_model(cand, conv_method=conv_method, network=network)
    example = example_input(cand)
    g = torch.Generator().manual_seed(0)
    check = torch.randn(_CHECK, *example.shape[1:], generator=g)
    latency = {
        name: probe_warm(net, example, name, options=options, check_inputs=check)
        for name in profiles
    }
    cost = compute_cost(net, example)
    metrics = Metrics(
        size_bytes=packed_size(net),
        macs=cost["macs"],
        bitops=cost["bitops"],
        latency_ms={p: st.median_ms for p, st in latency.items()},
        latency_partial=sorted(p for p, st in latency.items() if st.partial),
    )
    violations = rejections(metrics, constraints)
    return PrefilterResult(
        metrics=metrics, latency=latency, violations=violations, rejected=bool(violations)
    )
