"""A scheduler for the service benchmark whose trials complete at once (nothing trains).

``python bench/_instant.py CLAIMS_FILE`` runs ``hwnas scheduler``'s loop (settings from
``HWNAS_*``) with :class:`InstantExecutor` instead of Ray, and appends every job it claims to
``CLAIMS_FILE`` (one line each), so the benchmark can count jobs claimed twice. The trials'
metrics are synthetic (a hash of the candidate), labelled ``node = "instant"``: this measures
the API, the queue, the scheduler and the database, never a model.
"""

from __future__ import annotations

import hashlib
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from service.db import queue
from service.scheduler import loop
from service.settings import get_settings
from workers.records import EvalRequest, EvalResult, Metrics, VerifyRequest, VerifyResult


class _Handle:
    def __init__(self, request: EvalRequest) -> None:
        self.request = request


class InstantExecutor:
    """Ray's submit / wait / result surface; every evaluation is done when asked for."""

    capacity = 4

    def capacity_for(self, gpus: float) -> int:
        return self.capacity

    def submit(self, request: EvalRequest) -> _Handle:
        return _Handle(request)

    def wait(self, handles: list[Any], timeout_s: float) -> list[Any]:
        return list(handles)

    def result(self, handle: _Handle) -> EvalResult:
        digest = hashlib.sha256(handle.request.candidate.model_dump_json().encode()).digest()
        return EvalResult(
            prefiltered=False,
            metrics=Metrics(
                accuracy=0.5 + digest[0] / 512,
                size_bytes=1000 + int.from_bytes(digest[1:3], "big"),
                macs=1,
                bitops=1,
            ),
            latency={},
            node="instant",
            timings={},
            cpu_s={},
            device_s={},
        )

    def cancel(self, handle: Any) -> None:
        pass

    def verify(self, request: VerifyRequest) -> Any:
        raise RuntimeError("the instant executor verifies nothing (run with HWNAS_VERIFY=false)")

    def verify_result(self, handle: Any) -> VerifyResult:
        raise RuntimeError("unreachable")

    def health(self) -> tuple[bool, str]:
        return True, "instant executor (benchmark)"


def main() -> None:
    claims = Path(sys.argv[1])
    claim = queue.claim_job

    def recorded(**kw: Any) -> Any:
        job = claim(**kw)
        if job is not None:
            with claims.open("a") as f:
                f.write(f"{job.id}\n")
        return job

    loop.claim_job = recorded  # type: ignore[assignment]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    loop.run_scheduler(get_settings(), stop, executor=InstantExecutor())


if __name__ == "__main__":
    main()
