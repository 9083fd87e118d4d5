"""An in-process executor with Ray's submit/wait/result/cancel surface, for controller tests:
real training and TVM probes, but the controller's bookkeeping checked trial by trial."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.db import accounts, crud
from service.db.queue import claim_job
from service.db.session import get_sessionmaker
from service.schemas import JobSpec
from service.settings import Settings
from workers.evaluate import evaluate_json
from workers.probe import ProbeTransientError
from workers.records import EvalRequest, EvalResult, VerifyRequest, VerifyResult
from workers.verify import verify_json


class Handle:
    def __init__(self, n: int, payload: dict[str, Any]) -> None:
        self.n, self.payload = n, payload


class InlineExecutor:
    """Runs evaluations (and verifications) in this process when their result is asked for,
    through the same JSON edge as Ray."""

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
        self.verifications: list[VerifyRequest] = []
        self._n = 0

    def submit(self, request: EvalRequest) -> Handle:
        self._n += 1
        return Handle(self._n - 1, request.model_dump(mode="json"))

    def wait(self, handles: list[Any], timeout_s: float) -> list[Any]:
        return handles[:1]

    def result(self, handle: Any) -> EvalResult:
        if self.on_result:
            self.on_result(handle.n)
        if handle.n in self.fail_numbers:
            raise RuntimeError(f"injected failure in submission {handle.n}")
        if handle.n in self.device_fail_numbers:
            raise ProbeTransientError(f"injected: RPC server gone in submission {handle.n}")
        return EvalResult.model_validate(evaluate_json(handle.payload))

    def cancel(self, handle: Any) -> None:
        self.cancelled.append(handle.n)

    def verify(self, request: VerifyRequest) -> Handle:
        self.verifications.append(request)
        return Handle(-1, request.model_dump(mode="json"))

    def verify_result(self, handle: Any) -> VerifyResult:
        return VerifyResult.model_validate(verify_json(handle.payload))


TUNING = Path(tempfile.mkdtemp(prefix="hwnas-test-tuning-"))  # shared: later jobs reuse records


def settings_for(db_url: str, tmp_path: Path, *, verify: bool = False) -> Settings:
    """Test settings; the front's verification (minutes of timing and dense-parent tuning)
    only where a test is about it."""
    return Settings(
        database_url=db_url,
        artifact_dir=tmp_path,
        poll_interval_s=0.01,
        tuning_dir=TUNING,
        probe_cache_dir=tmp_path / "probe-cache",
        verify=verify,
        verify_windows=2,
    )


def submit(url: str, spec: dict[str, Any]) -> int:
    with get_sessionmaker(url)() as s:
        job = crud.create_job(
            session=s,
            job_in=JobSpec.model_validate(spec),
            owner_id=accounts.admin_user(session=s).id,
        )
        assert claim_job(session=s, worker_id="test", stale_after_s=60) is not None
        return job.id
