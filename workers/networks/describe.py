"""What a space needs of a lifted network: its layer groups, which can be pruned or factorized.

Grouping follows the module tree, so a group is something the user recognises. A network with
at most :data:`~search_spaces.MAX_GROUPS` conv / linear layers gets one group per layer. A larger
one starts from its top-level modules (``conv1``, ``layer1`` ... ``layer4``, ``fc``) and opens
any module that holds more than a quarter of the layers into its children (``features`` of a
MobileNetV2 becomes ``features.0`` ... ``features.18``); if that leaves more than MAX_GROUPS
groups, neighbours (in the order the graph runs them) are merged, the pair with the fewest
layers first, the first and last groups (stem and head) left alone. A ResNet-18 so has 6
groups (``conv1``, ``layer1`` ... ``layer4``, ``fc``), not 21 layers.

A group is ``prunable`` when it produces channels that structured pruning can remove: a root of
one of torch-pruning's dependency groups (the output channels of a conv or linear, with every
BatchNorm, depthwise conv, residual add and concatenation coupled to them), the classifier's
outputs excepted. It is ``factorizable`` when one of its (non-grouped) layers is wide enough for
a rank-halving factorization to shrink it.
"""

from __future__ import annotations

from collections import Counter

import torch
from pydantic import ValidationError
from torch import fx, nn

from search_spaces import MAX_GROUPS, LayerGroup, NetworkDescription, Normalization
from workers.networks.lift import Lifted
from workers.networks.ops import NetworkError, op_name

_FACTOR_MIN = 32  # a layer with fewer outputs or inputs than this is not worth factorizing


def weight_layers_in_order(gm: fx.GraphModule) -> list[str]:
    """Conv / linear module paths in the order the graph first calls them."""
    mods = dict(gm.named_modules())
    seen: dict[str, None] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(mods[node.target], nn.Conv2d | nn.Linear):
            seen.setdefault(str(node.target), None)
    return list(seen)


def head_path(gm: fx.GraphModule) -> str:
    """The layer that produces the output (the classifier, whose outputs are the classes)."""
    layers = weight_layers_in_order(gm)
    return layers[-1]


def prunable_roots(gm: fx.GraphModule, example: torch.Tensor) -> set[str]:
    """Module paths of the layers whose output channels torch-pruning can remove (classifier
    excepted)."""
    import torch_pruning as tp

    head = gm.get_submodule(head_path(gm))
    dg = tp.DependencyGraph().build_dependency(gm, example_inputs=example)
    paths = {m: n for n, m in gm.named_modules()}
    roots = set()
    for group in dg.get_all_groups(ignored_layers=[head], root_module_types=[nn.Conv2d, nn.Linear]):
        root = group[0].dep.target.module
        if root in paths:
            roots.add(paths[root])
    return roots


def _factorizable(m: nn.Module) -> bool:
    if isinstance(m, nn.Linear):
        return min(m.in_features, m.out_features) >= _FACTOR_MIN
    if isinstance(m, nn.Conv2d) and m.groups == 1:
        return min(m.in_channels, m.out_channels) >= _FACTOR_MIN
    return False


def _units(layers: list[str]) -> list[tuple[str, list[str]]]:
    """(module prefix, its layers) after opening every module holding more than a quarter of
    the layers (see the module doc), in graph order."""
    if len(layers) <= MAX_GROUPS:
        return [(p, [p]) for p in layers]
    depth = dict.fromkeys(layers, 1)

    def buckets() -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for p in layers:
            out.setdefault(".".join(p.split(".")[: depth[p]]), []).append(p)
        return out

    changed = True
    while changed:
        changed = False
        for members in buckets().values():
            deeper = [m for m in members if m.count(".") + 1 > depth[m]]
            if len(members) * 4 > len(layers) and deeper:
                for m in deeper:
                    depth[m] += 1
                changed = True
    return list(buckets().items())


def _merged_name(first: str, last: str) -> str:
    a, b = first.rpartition("."), last.rpartition(".")
    if a[0] == b[0] and a[2].isdigit() and b[2].isdigit():
        return f"{first}-{b[2]}"  # features.2-5
    return f"{first}-{last}"


def group_layers(layers: list[str]) -> list[tuple[str, list[str]]]:
    """(name, layer paths) of each group (see the module doc)."""
    units = _units(layers)
    names = [[n] for n, _ in units]
    members = [list(m) for _, m in units]
    while len(members) > MAX_GROUPS:  # merge neighbours, never the first or the last
        i = min(range(1, len(members) - 2), key=lambda k: len(members[k]) + len(members[k + 1]))
        members[i : i + 2] = [members[i] + members[i + 1]]
        names[i : i + 2] = [names[i] + names[i + 1]]
    return [
        (n[0] if len(n) == 1 else _merged_name(n[0], n[-1]), m)
        for n, m in zip(names, members, strict=True)
    ]


def describe(
    lifted: Lifted,
    *,
    name: str,
    digest: str,
    normalization: Normalization | None = None,
) -> NetworkDescription:
    """The upload as a space sees it: input, classes, layer groups (see the module doc)."""
    gm = lifted.module
    mods = dict(gm.named_modules())
    layers = weight_layers_in_order(gm)
    if not layers:
        raise NetworkError("the network has no convolution or linear layer: nothing to compress")
    example = torch.zeros(2, *lifted.input_shape)
    roots = prunable_roots(gm, example)
    groups = []
    for gname, paths in group_layers(layers):
        params = sum(int(mods[p].weight.numel()) for p in paths)
        groups.append(
            LayerGroup(
                name=gname,
                layers=tuple(paths),
                params=params,
                prunable=any(p in roots for p in paths),
                factorizable=any(_factorizable(mods[p]) for p in paths),
            )
        )
    ops = Counter(
        op_name(n.target) if n.op == "call_function" else str(type(mods[n.target]).__name__)
        for n in gm.graph.nodes
        if n.op in ("call_function", "call_module")
    )
    try:
        return NetworkDescription(
            name=name,
            digest=digest,
            input_shape=lifted.input_shape,
            num_classes=lifted.num_classes,
            normalization=normalization or Normalization(),
            groups=tuple(groups),
            layers=len(layers),
            params=sum(int(p.numel()) for p in gm.parameters()),
            ops=dict(sorted(ops.items())),
        )
    except ValidationError as e:  # e.g. one output (classes >= 2), an input of 0 pixels
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        raise NetworkError(f"the network's {where}: {err['msg']}") from None
