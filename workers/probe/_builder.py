"""A MetaSchedule builder that keeps its worker processes between batches.

``LocalBuilder`` starts a fresh process pool for every batch (a guard against a slow memory
leak in long-lived workers); each worker then imports TVM and torch again, ~3 s on these
machines, which is about half of tuning one small task. This builder reuses its pool and
recycles it every ``recycle_after`` batches instead.
"""

from __future__ import annotations

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
    ) -> None:
        super().__init__()
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
        args = [(None, None, b.mod, b.target, _serialize_params(b.params)) for b in build_inputs]
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
