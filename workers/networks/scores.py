"""An uploaded network's own data contract and scores: the input normalization it declared, and
its validation and test accuracy, measured once per (network, dataset, split) and cached."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import numpy as np
from torch import nn

from search_spaces import Normalization
from workers.data import Split, Splits
from workers.data._rows import DiskRows
from workers.records import EvalRequest
from workers.train import predict


def _norm(split: Split, mean: np.ndarray, std: np.ndarray) -> Split:
    if isinstance(split.x, DiskRows):  # on disk: normalized as each batch is read
        return Split(split.x.normalized(mean, std), split.y, split.index)
    x = (np.asarray(split.x, dtype=np.float32) - mean) / std
    return Split(x.astype(np.float32), split.y, split.index)


def normalized(data: Splits, normalization: Normalization) -> Splits:
    """``data`` as the uploaded model takes it: images in [0, 1] as stored (``unit``), or
    ``(x - mean) / std`` per channel (``mean_std``)."""
    if normalization.kind == "unit":
        return data
    assert normalization.mean is not None and normalization.std is not None
    shape = (1, -1) + (1,) * (data.train.x.ndim - 2)
    mean = np.asarray(normalization.mean, np.float32).reshape(shape)
    std = np.asarray(normalization.std, np.float32).reshape(shape)
    return Splits(
        _norm(data.train, mean, std),
        _norm(data.val, mean, std),
        _norm(data.test, mean, std),
        data.seed,
        f"{data.preprocessing}; then {normalization.describe()}",
    )


def uploaded_scores(
    parent: nn.Module, req: EvalRequest, data: Splits, dataset: str
) -> tuple[float, float | None]:
    """The uploaded model's validation and test accuracy on the job's data (cached under
    ``<cache dir>/networks/``, keyed by network, ``dataset`` (its identity: an upload's account
    and id, see ``workers.data.dataset_identity``), split seed and normalization)."""
    assert req.network is not None
    desc = req.network.description
    key = hashlib.sha256(
        json.dumps(
            [desc.digest, dataset, req.split_seed, desc.normalization.model_dump(mode="json")],
            sort_keys=True,
        ).encode()
    ).hexdigest()[:20]
    path = Path(req.cache_dir) / "networks" / f"{key}.json"
    try:
        got = json.loads(path.read_text())
        return float(got["val"]), float(got["test"])
    except (OSError, ValueError, KeyError):
        pass
    val = float((predict(parent, data.val) == data.val.y).mean())
    test = float((predict(parent, data.test) == data.test.y).mean())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{key}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps({"val": val, "test": test, "network": desc.name}))
    os.replace(tmp, path)
    return val, test
