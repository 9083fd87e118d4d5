"""An uploaded network as the parent of its candidates: lifted, annotated, prunable.

Uploads live content-addressed in the network store (``<artifact dir>/networks/<sha256>.pt2``),
so every worker finds the same bytes by the candidate's digest. A process lifts an archive once
(:func:`lifted_network`, cached by digest) and hands out copies. :class:`UploadedNet` carries
what hwnas's compression passes read off a network it built itself: ``hw`` on every layer (from
the candidate's group choices), the (conv, BatchNorm) pairs to fold, and a channel pruner, here
torch-pruning's dependency graph at each group's ratio instead of hwnas's own channel groups
(which only its built-in architectures record).
"""

from __future__ import annotations

import copy
import hashlib
import threading
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search_spaces import Candidate, GroupCompression, NetworkDescription
from workers.compress.rounding import CHANNEL_MULTIPLE
from workers.models import CompressibleNet, LayerSpec
from workers.networks.archive import load_program
from workers.networks.describe import head_path
from workers.networks.lift import Lifted, check_lifted, lift
from workers.networks.ops import NetworkError

MAX_ARCHIVE_BYTES = 4 << 30  # what a stored archive may declare (uploads are bounded earlier)
_lock = threading.Lock()


def network_file(store: Path, digest: str) -> Path:
    return store / f"{digest}.pt2"


def sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


@lru_cache(maxsize=4)
def _lifted(path: str, digest: str) -> Lifted:
    blob = Path(path).read_bytes()
    if sha256(blob) != digest:
        raise NetworkError(f"{path}: the stored network does not match its digest {digest}")
    ep = load_program(blob, max_bytes=MAX_ARCHIVE_BYTES)
    lifted = lift(ep)
    check_lifted(ep, lifted)
    return lifted


def lifted_network(store: Path, digest: str) -> Lifted:
    """The upload with SHA-256 ``digest`` lifted into layers (a fresh copy each call)."""
    with _lock:
        base = _lifted(str(network_file(store, digest)), digest)
    return copy.deepcopy(base)


class UploadedNet(CompressibleNet):
    """A lifted upload with what compression reads (see the module doc)."""

    def __init__(self, lifted: Lifted) -> None:
        super().__init__()
        self.body = lifted.module
        self.input_shape = lifted.input_shape
        self.conv_bn = [(f"body.{c}", f"body.{b}") for c, b in lifted.conv_bn]
        self.groups = []  # hwnas's own channel groups: none (see prune_channels)
        self.head_path = f"body.{head_path(lifted.module)}"
        self.layer_group: dict[str, str] = {}
        self.group_ratio: dict[str, float] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(x)
        return out

    def annotate(self, groups: Iterable[GroupCompression], description: NetworkDescription) -> None:
        """Every layer's ``hw`` and every group's prune ratio from a candidate's choices."""
        by_name = {g.name: g for g in groups}
        for group in description.groups:
            comp = by_name.get(group.name)
            if comp is None:
                raise NetworkError(f"the candidate has no choice for group {group.name!r}")
            spec = LayerSpec(comp.wbits, comp.abits, comp.rank, comp.wformat, comp.sparsity)
            for path in group.layers:
                self.get_submodule(f"body.{path}").hw = spec  # type: ignore[assignment]
                self.layer_group[f"body.{path}"] = group.name
            self.group_ratio[group.name] = comp.prune

    def prune_channels(
        self,
        criterion: str,
        *,
        steps: int = 1,
        batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]] | None = None,
        finetune: Callable[[nn.Module], None] | None = None,
    ) -> None:
        """Structured pruning with torch-pruning's dependency graph: every channel group rooted
        at a layer of layer group ``g`` loses ``g``'s ratio of its channels (coupled convs,
        BatchNorms, residual adds and concatenations with it), rounded to multiples of
        :data:`CHANNEL_MULTIPLE`; the classifier's outputs are kept. ``steps`` > 1 prunes in
        rounds with ``finetune`` between them."""
        import torch_pruning as tp

        ratios = {
            self.get_submodule(path): self.group_ratio.get(group, 0.0)
            for path, group in self.layer_group.items()
        }
        if not any(r > 0 for r in ratios.values()):
            return
        with torch.enable_grad():  # the dependency graph traces autograd (callers may not)
            self._prune(tp, ratios, criterion, steps, batches, finetune)

    def _prune(
        self,
        tp: Any,
        ratios: dict[nn.Module, float],
        criterion: str,
        steps: int,
        batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]] | None,
        finetune: Callable[[nn.Module], None] | None,
    ) -> None:
        example = torch.zeros(2, *self.input_shape)
        importance = _importance(criterion)
        pruner = tp.pruner.MetaPruner(
            self,
            example,
            importance=importance,
            pruning_ratio=0.0,
            pruning_ratio_dict=ratios,
            iterative_steps=steps,
            ignored_layers=[self.get_submodule(self.head_path)],
            round_to=CHANNEL_MULTIPLE,
        )
        for step in range(steps):
            if criterion == "taylor":
                if batches is None:
                    raise ValueError("taylor pruning needs batches")
                self.zero_grad(set_to_none=True)
                for x, y in batches():
                    nn.functional.cross_entropy(self(x), y).backward()
            pruner.step()
            self.zero_grad(set_to_none=True)
            if finetune is not None and step < steps - 1:
                finetune(self)


def _importance(criterion: str):  # type: ignore[no-untyped-def]
    import torch_pruning as tp

    if criterion == "l1":
        return tp.importance.MagnitudeImportance(p=1)
    if criterion == "bn_gamma":
        return tp.importance.BNScaleImportance()
    if criterion == "taylor":
        return tp.importance.TaylorImportance()
    raise ValueError(f"unknown prune criterion {criterion!r}")


def uploaded_parent(cand: Candidate, store: Path, description: NetworkDescription) -> UploadedNet:
    """The candidate's uploaded network, annotated with its group choices (uncompressed)."""
    assert cand.network is not None and cand.groups is not None
    net = UploadedNet(lifted_network(store, cand.network.digest)).eval()
    net.annotate(cand.groups, description)
    return net
