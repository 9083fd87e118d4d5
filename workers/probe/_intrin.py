"""Register TVM's CPU tensor intrinsics without the 30-second GPU ones.

``import tvm.s_tir.tensor_intrin`` (done by MetaSchedule's TuneContext and by every
LocalBuilder worker) takes ~31 s here, 22 s of it in the CUDA intrinsics, and the builder
starts fresh workers for every batch. CPU probes only need the x86 and ARM intrinsics, so this
installs the package as an empty namespace (its ``__init__`` not run) and imports those two
(~1.2 s). Call it before tuning, and as the builder workers' initializer.

It also replaces the implementation of TVM's ``dot_16x4_vnni`` intrinsic: TVM 0.27 passes
``llvm.x86.avx512.vpdpbusd.512`` its operands as ``<16 x i32>``, but the LLVM it ships declares
them ``<64 x i8>`` and refuses the module ("Call parameter type does not match function
signature"), so every VNNI-tensorized schedule failed to build. Same description, same
instruction, operands reinterpreted as bytes (:mod:`workers.probe._vnni`).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

_PKG = "tvm.s_tir.tensor_intrin"


def load_cpu_intrinsics() -> None:
    """Idempotent; a no-op when the full package is already imported (the VNNI fix is
    registered either way)."""
    if _PKG in sys.modules:
        from workers.probe import _vnni

        _vnni.register()
        return
    import tvm.s_tir

    pkg = types.ModuleType(_PKG)
    pkg.__path__ = [str(Path(tvm.s_tir.__file__).parent / "tensor_intrin")]
    pkg.__package__ = _PKG
    sys.modules[_PKG] = pkg
    try:
        __import__(f"{_PKG}.x86")
        __import__(f"{_PKG}.arm_cpu")
    except Exception:
        del sys.modules[_PKG]  # fall back to the full (slow) package
        raise
    from workers.probe import _vnni

    _vnni.register()
