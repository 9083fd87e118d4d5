"""Finish a shipped library whose tuning was partial: tune what is missing, rebuild, re-check.

A trial's probe tunes within its budget; tasks left without a record compile with default
schedules and the probe says ``partial``. When the probe ships a library that is partial, it
keeps beside it what rebuilding needs: the lowered Relax module (``<stem>.relax.json.gz``,
TVM's own JSON, weights included, gzipped; not kept over :data:`MAX_KEPT_BYTES`) and the
numerics check (``<stem>.check.npz``: the check inputs and the PyTorch model's outputs on
them). Before a job's front is verified, :func:`finish_library`
tunes the missing tasks into the profile's database (within a budget), compiles the module
again with the records, checks the new library against the stored outputs as the probe did,
and only then replaces the shipped file. A library that still has untuned tasks stays as it
was, and the caller says which point is partial and why.
"""

from __future__ import annotations

import gzip
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hw_profiles import Profile
from workers.probe.build import compile_module, export_library, tuning_state
from workers.probe.errors import ProbeError
from workers.probe.targets import resolve_target, tvm

MIN_ARGMAX_AGREEMENT = 0.99


MAX_KEPT_BYTES = 256 * 2**20  # a lowered module larger than this is not kept (disk)


def relax_beside(library: Path) -> Path:
    return library.with_name(f"{library.stem}.relax.json.gz")


def check_beside(library: Path) -> Path:
    return library.with_name(f"{library.stem}.check.npz")


def keep_for_finishing(library: Path, mod: Any, inputs: np.ndarray, reference: np.ndarray) -> None:
    """Store what :func:`finish_library` needs beside a partially tuned ``library``."""
    t = tvm()
    text = t.ir.save_json(mod)
    if len(text) > MAX_KEPT_BYTES:
        return
    relax_beside(library).write_bytes(gzip.compress(text.encode(), compresslevel=3))
    with check_beside(library).open("wb") as f:
        np.savez(f, inputs=inputs.astype(np.float32), reference=reference.astype(np.float32))


def forget_finishing(library: Path) -> None:
    relax_beside(library).unlink(missing_ok=True)
    check_beside(library).unlink(missing_ok=True)


@dataclass
class Finished:
    """What finishing did to one library."""

    rebuilt: bool  # the shipped file was replaced by a fully tuned build
    untuned: list[str] = field(default_factory=list)  # tasks still without a record
    tasks: int = 0
    tune_s: float = 0.0
    argmax_agreement: float | None = None
    why: str = ""


def finish_library(
    library: Path, profile: Profile, tuning_root: Path | None, budget_s: float
) -> Finished:
    """Tune ``library``'s missing tasks within ``budget_s``, rebuild and re-check it.

    Raises:
        ProbeError: the rebuilt library disagrees with the stored PyTorch outputs (the shipped
            file is left as it was).
    """
    relax_json, check = relax_beside(library), check_beside(library)
    if not relax_json.is_file() or not check.is_file():
        return Finished(False, why="no lowered module kept beside the library")
    if tuning_root is None:
        return Finished(False, why="the job tunes nothing (no tuning database)")
    t = tvm()

    target = resolve_target(profile)
    mod = t.ir.load_json(gzip.decompress(relax_json.read_bytes()).decode())
    t0 = time.perf_counter()
    state = tuning_state(mod, target, profile, tuning_root, budget_s)
    tune_s = round(time.perf_counter() - t0, 3)
    if state.partial:
        return Finished(
            False,
            untuned=state.untuned,
            tasks=len(state.tasks),
            tune_s=tune_s,
            why=f"{len(state.untuned)} of {len(state.tasks)} tasks still untuned after "
            f"{budget_s:g} s of tuning",
        )
    tmp = library.with_name(f"{library.stem}.{os.getpid()}.finish.so")
    try:
        export_library(compile_module(mod, target, profile, state), tmp, profile)
        agree = _check(tmp, check, profile)
        tmp.replace(library)
    finally:
        tmp.unlink(missing_ok=True)
    forget_finishing(library)
    return Finished(True, [], len(state.tasks), tune_s, agree, "every task tuned")


def _check(lib: Path, check: Path, profile: Profile) -> float:
    """The rebuilt library's outputs against the stored PyTorch outputs (as the probe checks)."""
    from workers.probe.measure import load_vm, run_outputs
    from workers.probe.targets import device_of

    with np.load(check, allow_pickle=False) as z:
        inputs, ref = z["inputs"], z["reference"]
    if not profile.is_local:
        from workers.probe.rpc import measure_remote

        r = measure_remote(lib, inputs[:1], [x[None] for x in inputs], profile)
        outputs = r["outputs"]
    else:
        dev = device_of(profile)
        outputs = run_outputs(load_vm(lib, dev), dev, [x[None] for x in inputs])
    agree = float((outputs.argmax(1) == ref.argmax(1)).mean())
    if agree < MIN_ARGMAX_AGREEMENT:
        raise ProbeError(
            f"the fully tuned rebuild for {profile.name} disagrees with PyTorch: argmax "
            f"agreement {agree:.3f} < {MIN_ARGMAX_AGREEMENT}"
        )
    return agree
