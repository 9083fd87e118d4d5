"""Cache of trained dense parents, keyed by architecture + dataset + split + recipe.

Compression variants of one architecture reuse its parent instead of retraining it. Entries are
safetensors files written atomically under ``<artifact_dir>/parents/``, so they survive restarts
and are safe to share between workers on one filesystem.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from safetensors.torch import load_file, save_file

from search_spaces import Candidate
from workers.models import Net, build_model
from workers.train import Recipe, fit


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
        net.load_state_dict(load_file(str(path)))
        net.eval()
        _touch(path)
        return net, True
    fit(net, train_data, epochs=recipe.epochs, recipe=recipe, stage="training parent epoch")  # type: ignore[arg-type]
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(tmp), metadata={"arch": json.dumps(candidate.arch_dict())})
    os.replace(tmp, path)
    return net, False


def _touch(path: Path) -> None:
    """Mark a cache entry used (``hwnas gc`` drops the least recently used first)."""
    try:
        os.utime(path)
    except OSError:  # read-only store, or collected meanwhile: the model is loaded already
        pass
