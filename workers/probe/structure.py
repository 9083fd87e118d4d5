"""The compressed structure of a candidate without training: what a probe needs to know.

Latency depends on shapes, layer types and precisions, not on trained weights, so a probe can
run before training (a pre-filter, a tuning grid): build the network, prune by L1 at the
candidate's ratios, factorize at its ranks, zero its sparse layers by magnitude, fold BN,
calibrate the activation quantizers on random inputs, cluster its k-means layers and code the
rest (so the packed size is the trained candidate's too). The lowered graph is the one the
trained candidate will have, so it hits the same tuning records and probe-cache entries.
"""

from __future__ import annotations

import torch

from search_spaces import Candidate
from workers.compress import factorize_model, fold_batchnorm, prune_model
from workers.compress.cluster import attach_clusters
from workers.compress.quantize import (
    attach_act_quant,
    bake,
    calibrate,
    quantize_weights,
    snap_bias,
)
from workers.compress.sparse import bake_masks, set_sparsity
from workers.models import CompressibleNet, example_input
from workers.records import NetworkSource


@torch.no_grad()
def structural_model(
    cand: Candidate,
    seed: int = 0,
    conv_method: str = "tucker2",
    network: NetworkSource | None = None,
) -> CompressibleNet:
    """The untrained ``cand`` compressed as the real pipeline would shape it; ``conv_method``
    is the job's ``conv_decomposition`` (``tucker2`` or ``svd``): it changes the structure.
    An uploaded network (``network``) starts from its own weights: pruning keeps the same
    channel counts whatever the weights, so the structure is the trained candidate's."""
    from workers.networks.models import model_of

    torch.manual_seed(seed)
    net = model_of(cand, network).eval()
    prune_model(net, "l1")
    factorize_model(net, conv_method=conv_method)  # type: ignore[arg-type]
    set_sparsity(net)
    bake_masks(net)
    fold_batchnorm(net)
    if attach_act_quant(net):
        g = torch.Generator().manual_seed(seed)
        shape = example_input(cand).shape[1:]
        calibrate(net, [torch.randn(32, *shape, generator=g)])
    attach_clusters(net)
    bake(net)
    quantize_weights(net)
    snap_bias(net)
    return net.eval()
