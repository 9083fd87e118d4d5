"""The profile's canary: one fixed model timed in every timing window beside the candidate.

A latency timed in one window can't be compared with one timed in another on these shared
machines (the same library's median swung ~1.6x between windows on an idle VM); its ratio to a
reference timed interleaved with it can. The canary is that reference: a small fixed fp32 CNN
(1x28x28 in, seeded weights), compiled once per profile, target and TVM version
(MetaSchedule-tuned, from a tuning database of its own, on CPUs that can tune; dlight defaults
on GPUs) and then frozen: the library file is built once per host directory
(``HWNAS_CANARY_DIR``, default ``~/.cache/hwnas/canary``) and every later window, job, process
and verification loads that same file, whatever the job's own tuning settings. Its id and
timing go on every probe and model card, and bundles ship it (``tvm/<profile>.canary.so``) so
anyone can re-time the model against it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hw_profiles import Profile
from workers.probe._locks import flocked
from workers.probe.targets import is_gpu, tvm

CANARY_VERSION = 1
CANARY_SHAPE = (1, 1, 28, 28)
CANARY_TUNE_S = 120.0
"""Tuning seconds the canary may take, once per tuning database (its records are kept)."""


def canary_net() -> nn.Module:
    """The canary network: conv 1->16 (s2), 16->32 (s2), 32->32, global pool, linear 10."""
    g = torch.Generator().manual_seed(20261201)
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return net.eval()


def canary_input() -> torch.Tensor:
    return torch.randn(*CANARY_SHAPE, generator=torch.Generator().manual_seed(7))


@dataclass(frozen=True)
class Canary:
    """A built canary library: ``path`` (exported for the profile's device) and its ``id``."""

    id: str
    path: Path
    tuning: str
    partial: bool


def canary_root() -> Path:
    """Where canaries (and their own tuning databases) live on this host."""
    env = os.environ.get("HWNAS_CANARY_DIR")
    return Path(env) if env else Path.home() / ".cache" / "hwnas" / "canary"


def canary_kind(profile: Profile) -> str:
    if is_gpu(profile):
        return "default-gpu"
    from workers.probe.tuning import can_tune

    return "metaschedule" if can_tune(profile) else "untuned"


def canary_beside(library: Path) -> Path:
    """Where a shipped library's canary copy lives: ``<stem>.canary.so`` next to it."""
    return library.with_name(f"{library.stem}.canary.so")


def canary_id(profile: Profile, target: Any, kind: str) -> str:
    blob = f"{CANARY_VERSION}|{profile.name}|{target}|{tvm().__version__}|{kind}"
    if profile.measure.emulated:  # tuned on an emulator: never the canary of a real board
        blob += "|emulated"
    return "canary-" + hashlib.sha256(blob.encode()).hexdigest()[:16]


def get_canary(profile: Profile, target: Any) -> Canary:
    """The profile's canary library, built (and tuned, ~1-2 min once) on first use, then the
    same file.

    Raises:
        ProbeError: it could not be lowered or compiled.
    """
    kind = canary_kind(profile)
    cid = canary_id(profile, target, kind)
    root = canary_root() / profile.name.replace("/", "__")
    path, meta = root / f"{cid}.so", root / f"{cid}.json"
    with flocked(root / f"{cid}.lock"):
        if not (path.is_file() and meta.is_file()):
            tuning_root = root / "tuning" if kind == "metaschedule" else None
            info = _build(profile, target, kind, tuning_root, path)
            meta.write_text(json.dumps({"id": cid, **info}, sort_keys=True))
        info = json.loads(meta.read_text())
    return Canary(cid, path, str(info["tuning"]), bool(info.get("partial")))


def _build(
    profile: Profile, target: Any, kind: str, tuning_root: Path | None, path: Path
) -> dict[str, Any]:
    from workers.probe.build import compile_module, export_library, tuning_state
    from workers.probe.lowering import to_relax

    mod = to_relax(canary_net(), canary_input())
    state = tuning_state(mod, target, profile, tuning_root, CANARY_TUNE_S)
    ex = compile_module(mod, target, profile, state)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.so")
    export_library(ex, tmp, profile)
    tmp.replace(path)
    return {"tuning": kind, "partial": state.partial, "untuned_tasks": state.untuned}
