"""A MetaSchedule builder that keeps its worker processes between batches.

``LocalBuilder`` starts a fresh process pool for every batch (a guard against a slow memory
leak in long-lived workers); each worker then imports TVM and torch again, ~3 s on these
machines, which is about half of tuning one small task. This builder reuses its pool and
recycles it every ``recycle_after`` batches instead.

For boards measured over RPC the candidates are exported as shared libraries linked by the
profile's cross compiler (:func:`worker_init` registers that export in each worker).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.builder import BuilderInput, BuilderResult, PyBuilder
from tvm.s_tir.meta_schedule.builder.local_builder import _serialize_params, _worker_func
from tvm.support.popen_pool import PopenPoolExecutor, StatusKind


@derived_object
class PersistentBuilder(PyBuilder):  # type: ignore[misc]
    """``LocalBuilder`` semantics (default build + export), one long-lived pool."""

    def __init__(
        self,
        *,
        max_workers: int,
        timeout_sec: float,
        initializer: Callable[[], None] | None = None,
        recycle_after: int = 50,
        f_export: str | None = None,
    ) -> None:
        super().__init__()
        self.f_export = f_export  # a global function name registered by the initializer
        self.max_workers, self.timeout_sec = max_workers, timeout_sec
        self.initializer, self.recycle_after = initializer, recycle_after
        self._pool: PopenPoolExecutor | None = None
        self._batches = 0

    def _get_pool(self) -> PopenPoolExecutor:
        if self._pool is None or self._batches >= self.recycle_after:
            self.close()
            self._pool = PopenPoolExecutor(
                max_workers=self.max_workers,
                timeout=self.timeout_sec,
                initializer=self.initializer,
            )
            self._batches = 0
        self._batches += 1
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def build(self, build_inputs: list[BuilderInput]) -> list[BuilderResult]:
        args = [
            (None, self.f_export, b.mod, b.target, _serialize_params(b.params))
            for b in build_inputs
        ]
        results: list[BuilderResult] = []
        for r in self._get_pool().map_with_error_catching(lambda a: _worker_func(*a), args):
            if r.status == StatusKind.COMPLETE:
                results.append(BuilderResult(r.value, None))
            elif r.status == StatusKind.TIMEOUT:
                results.append(BuilderResult(None, f"build timed out after {self.timeout_sec} s"))
            else:
                results.append(BuilderResult(None, f"build failed: {_text(r.value)}"))
        return results


def _text(value: Any) -> str:
    return str(value)[-2000:]


EXPORT_CROSS = "hwnas.meta_schedule.export_cross"


def worker_init(cross_compiler: str | None = None) -> None:
    """Builder worker set-up: CPU tensor intrinsics, and the cross-compiling export."""
    from tvm_ffi import register_global_func

    from workers.probe._intrin import load_cpu_intrinsics

    load_cpu_intrinsics()
    if cross_compiler:

        def export(mod: Any) -> str:
            path = os.path.join(tempfile.mkdtemp(), "tvm_tmp_mod.so")
            mod.export_library(path, cc=cross_compiler)
            return path

        register_global_func(EXPORT_CROSS, export, override=True)
