"""Cache of trained dense parents, keyed by architecture + dataset + split + recipe.

Compression variants of one architecture reuse its parent instead of retraining it. Entries are
safetensors files written atomically (a temp name unique on every node, then rename) under
``<artifact_dir>/parents/``, so they survive restarts and are safe to share between workers on
one filesystem. Each carries a checksum of its tensors: an entry that does not load or does not
match (a torn copy, a damaged disk) is dropped, logged and trained again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from search_spaces import Candidate
from workers.models import Net, build_model
from workers.train import Recipe, fit

log = logging.getLogger(__name__)


def parent_key(candidate: Candidate, dataset: str, split_seed: int, recipe: Recipe) -> str:
    blob = json.dumps(
        {
            "arch": candidate.arch_dict(),
            "dataset": dataset,
            "split_seed": split_seed,
            "recipe": recipe.parent_part(),
            "v": 1,
        },
        sort_keys=True,
    ).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def trained_parent(
    candidate: Candidate,
    *,
    dataset: str,
    split_seed: int,
    recipe: Recipe,
    train_data: object,
    cache_dir: Path,
) -> tuple[Net, bool]:
    """The trained dense model of ``candidate`` and whether it came from the cache."""
    key = parent_key(candidate, dataset, split_seed, recipe)
    path = cache_dir / f"{key}.safetensors"
    net = build_model(candidate)
    if path.is_file():
        try:
            net.load_state_dict(_load_checked(path))
            net.eval()
            _touch(path)
            return net, True
        except Exception as e:  # noqa: BLE001 - any damage: the parent is trained again
            log.warning("parent cache entry %s is corrupt (%s): dropped, training again", path, e)
            path.unlink(missing_ok=True)
            net = build_model(candidate)
    fit(net, train_data, epochs=recipe.epochs, recipe=recipe, stage="training parent epoch")  # type: ignore[arg-type]
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{key}.{uuid.uuid4().hex}.tmp")  # unique on every node
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    meta = {"arch": json.dumps(candidate.arch_dict()), "sha256": _digest(state)}
    save_file(state, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return net, False


def _digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        # reshape(-1): 0-d tensors (BatchNorm's num_batches_tracked) cannot be viewed as bytes
        t = state[k].detach().cpu().contiguous().reshape(-1)
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _load_checked(path: Path) -> dict[str, torch.Tensor]:
    """The entry's tensors, checked against the checksum it was written with (entries from
    before checksums are taken as they are)."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iter
    want = meta.get("sha256")
    if want is not None and _digest(state) != want:
        raise ValueError("checksum mismatch")
    return state


def _touch(path: Path) -> None:
    """Mark a cache entry used (``hwnas gc`` drops the least recently used first)."""
    try:
        os.utime(path)
    except OSError:  # read-only store, or collected meanwhile: the model is loaded already
        pass
