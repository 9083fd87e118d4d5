"""Ray execution of candidate evaluations: embedded local Ray or a cluster."""

from __future__ import annotations

import logging
import os
from typing import Any

from service.settings import Settings

log = logging.getLogger(__name__)


class RayExecutor:
    """Submits ``workers.evaluate.evaluate_candidate`` as Ray tasks (one per trial).

    ``HWNAS_RAY_ADDRESS`` unset starts an embedded Ray with ``ray_num_cpus`` CPUs; set, it
    connects to that cluster. Tasks are retried once when their worker process dies; Python
    exceptions are not retried (they are the candidate's fault, recorded as a FAIL trial).
    """

    def __init__(self, settings: Settings) -> None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if settings.ray_address is None:
            # Embedded single-box default: no token (nothing else can reach it).
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        import ray

        from workers.evaluate import evaluate_candidate

        self._ray = ray
        env = {
            "TVM_NUM_THREADS": str(settings.worker_threads),
            "OMP_NUM_THREADS": str(settings.worker_threads),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        if not ray.is_initialized():
            if settings.ray_address is None:
                ray.init(
                    num_cpus=settings.ray_num_cpus,
                    include_dashboard=False,
                    object_store_memory=256 * 2**20,
                    runtime_env={"env_vars": env},
                    log_to_driver=False,
                )
            else:
                ray.init(address=settings.ray_address, runtime_env={"env_vars": env})
        self._task = ray.remote(evaluate_candidate).options(
            num_cpus=settings.trial_num_cpus, max_retries=1
        )
        cpus = float(ray.cluster_resources().get("CPU", 1))  # type: ignore[no-untyped-call]
        self.capacity = settings.max_in_flight or max(1, int(cpus // settings.trial_num_cpus))
        log.info("ray ready: %s CPUs, %d trials in flight", cpus, self.capacity)

    def submit(self, candidate: dict[str, Any], spec: dict[str, Any]) -> Any:
        return self._task.remote(candidate, spec)

    def wait(self, handles: list[Any], timeout_s: float) -> list[Any]:
        ready, _ = self._ray.wait(handles, num_returns=1, timeout=timeout_s)
        return list(ready)

    def result(self, handle: Any) -> dict[str, Any]:
        out: dict[str, Any] = self._ray.get(handle)
        return out

    def cancel(self, handle: Any) -> None:
        self._ray.cancel(handle, force=True)

    def shutdown(self) -> None:
        self._ray.shutdown()
