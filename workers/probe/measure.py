"""Running compiled libraries: outputs for the numerics check, and loaded VMs kept warm.

Timing itself is :mod:`workers.probe.timing` (the same protocol locally and over RPC).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

_LOADED: dict[tuple[str, str], Any] = {}


def run_outputs(vm: Any, dev: Any, inputs: list[np.ndarray]) -> np.ndarray:
    """Run ``main`` on each (batch-1) input and stack the outputs."""
    t = _tvm()
    if not inputs:
        return np.zeros((0, 0), np.float32)
    return np.concatenate([vm["main"](t.runtime.tensor(x, dev)).numpy() for x in inputs])


def load_vm(path: Path, dev: Any) -> Any:
    """A VM over the exported library at ``path``."""
    t = _tvm()
    from tvm import relax

    return relax.VirtualMachine(t.runtime.load_module(str(path)), dev)


def local_vm(path: Path, dev: Any) -> Any:
    """:func:`load_vm`, loaded once per process and device (a canary: one fixed file)."""
    key = (str(path), str(dev))
    if key not in _LOADED:
        _LOADED[key] = load_vm(path, dev)
    return _LOADED[key]


def _tvm() -> Any:
    from workers.probe.targets import tvm

    return tvm()
