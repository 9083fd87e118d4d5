"""The model of any candidate: built by hwnas from its architecture, or its uploaded network."""

from __future__ import annotations

from pathlib import Path

from search_spaces import Candidate
from workers.models import CompressibleNet, build_model
from workers.networks.parent import uploaded_parent
from workers.records import NetworkSource


def model_of(cand: Candidate, network: NetworkSource | None = None) -> CompressibleNet:
    """The dense model of ``cand``, annotated with its compression choices: a fresh built-in
    architecture, or (family ``network``) the uploaded weights from ``network``'s store.

    Raises:
        ValueError: a network candidate without its source.
    """
    if cand.family != "network":
        return build_model(cand)
    if network is None:
        raise ValueError("a network candidate needs its network (EvalRequest.network)")
    return uploaded_parent(cand, Path(network.store), network.description)
