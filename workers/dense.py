"""The dense fp32 parent of a candidate: same architecture, no compression.

What a compressed candidate is compared with: its speedup and size ratio "vs dense" are
against this model on the same profile (measured, never assumed).
"""

from __future__ import annotations

from search_spaces import Candidate

_DENSE = {"wbits": 32, "wformat": "float", "abits": 32, "prune": 0.0, "rank": 1.0, "sparsity": 0.0}


def dense_candidate(cand: Candidate) -> Candidate:
    """``cand`` with every stage and block at float32, unpruned, full rank, no sparsity; head at
    32 bits; no candidate-level distillation. For an uploaded network: every group dense, i.e.
    the uploaded model itself."""
    stages = tuple(s.model_copy(update={**_DENSE, "blocks": None}) for s in cand.stages)
    groups = (
        None
        if cand.groups is None
        else [g.model_copy(update=_DENSE).model_dump(mode="json") for g in cand.groups]
    )
    return Candidate.model_validate(
        {
            **cand.model_dump(mode="json"),
            "stages": [s.model_dump(mode="json") for s in stages],
            "groups": groups,
            "head_wbits": 32,
            "head_abits": 32,
            "distill": None,
        }
    )
