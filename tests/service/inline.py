"""An in-process executor with Ray's submit/wait/result/cancel surface, for controller tests:
real training and TVM probes, but the controller's bookkeeping checked trial by trial."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.db import crud
from service.db.queue import claim_job
from service.db.session import get_sessionmaker
from service.schemas import JobCreate
from service.settings import Settings
from workers.evaluate import evaluate_candidate
from workers.probe import ProbeTransientError


class Handle:
    def __init__(self, n: int, candidate: dict[str, Any], spec: dict[str, Any]) -> None:
        self.n, self.candidate, self.spec = n, candidate, spec


class InlineExecutor:
    """Runs evaluate_candidate in this process when its result is asked for."""

    capacity = 2

    def capacity_for(self, gpus: float) -> int:
        return self.capacity

    def __init__(
        self,
        fail_numbers: set[int],
        on_result: Callable[[int], None] | None = None,
        device_fail_numbers: frozenset[int] = frozenset(),
    ):
        self.fail_numbers = fail_numbers
        self.device_fail_numbers = device_fail_numbers
        self.on_result = on_result
        self.cancelled: list[int] = []
        self._n = 0

    def submit(self, candidate: dict[str, Any], spec: dict[str, Any]) -> Handle:
        self._n += 1
        return Handle(self._n - 1, candidate, spec)

    def wait(self, handles: list[Any], timeout_s: float) -> list[Any]:
        return handles[:1]

    def result(self, handle: Any) -> dict[str, Any]:
        if self.on_result:
            self.on_result(handle.n)
        if handle.n in self.fail_numbers:
            raise RuntimeError(f"injected failure in submission {handle.n}")
        if handle.n in self.device_fail_numbers:
            raise ProbeTransientError(f"injected: RPC server gone in submission {handle.n}")
        return evaluate_candidate(handle.candidate, handle.spec)

    def cancel(self, handle: Any) -> None:
        self.cancelled.append(handle.n)


TUNING = Path(tempfile.mkdtemp(prefix="hwnas-test-tuning-"))  # shared: later jobs reuse records


def settings_for(db_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=db_url,
        artifact_dir=tmp_path,
        poll_interval_s=0.01,
        tuning_dir=TUNING,
        probe_cache_dir=tmp_path / "probe-cache",
    )


def submit(url: str, spec: dict[str, Any]) -> int:
    with get_sessionmaker(url)() as s:
        job = crud.create_job(session=s, job_in=JobCreate.model_validate(spec))
        assert claim_job(session=s, worker_id="test", stale_after_s=60) is not None
        return job.id
