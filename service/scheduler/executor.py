"""Ray execution of candidate evaluations: embedded local Ray or a cluster."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from service.settings import Settings
from workers.records import EvalRequest, EvalResult, VerifyRequest, VerifyResult

log = logging.getLogger(__name__)
Task = Callable[[dict[str, Any]], Any]  # EvalRequest as JSON -> EvalResult as JSON
RESULT_TIMEOUT_S = 300.0  # fetching a ready result (an object the node must still send)


class RayExecutor:
    """Submits ``workers.evaluate.evaluate_json`` as Ray tasks (one per trial), and
    ``workers.verify.verify_json`` (one per verification round of a job's front).

    Requests and results cross the Ray edge as JSON (the records' ``model_dump``) and are
    validated back into their types here.

    ``HWNAS_RAY_ADDRESS`` unset starts an embedded Ray with ``ray_num_cpus`` CPUs; set, it
    connects to that cluster with token authentication (``RAY_AUTH_TOKEN_PATH`` or
    ``RAY_AUTH_TOKEN``, as the cluster was started with). Tasks are retried once when their
    worker process dies; Python exceptions are not retried (they are the candidate's fault,
    recorded as a FAIL trial). A trial that probes a CUDA profile asks Ray for one GPU, so it
    only runs on a GPU node.
    """

    def __init__(
        self,
        settings: Settings,
        task: Task | None = None,
    ) -> None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if settings.ray_address is None:
            # Embedded single-box default: no token (nothing else can reach it).
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        else:
            os.environ.setdefault("RAY_AUTH_MODE", "token")
        import ray

        from workers.evaluate import evaluate_json
        from workers.verify import verify_json

        self._ray = ray
        self._cpus = settings.trial_num_cpus
        self._max_in_flight = settings.max_in_flight
        env = {
            "TVM_NUM_THREADS": str(settings.worker_threads),
            "OMP_NUM_THREADS": str(settings.worker_threads),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        for k in (
            "HWNAS_FAULT",
            "HWNAS_FAULT_DIR",
            "HWNAS_FAULT_MODE",
        ):  # the fault-injection suite's points
            if os.environ.get(k):
                env[k] = os.environ[k]
        if "HWNAS_FAULT" in env:
            env["HWNAS_FAULT_PGID"] = str(os.getpgid(0))
        if not ray.is_initialized():
            if settings.ray_address is None:
                ray.init(
                    # "local": always a new instance, never a `ray start` cluster on this host
                    address="local",
                    num_cpus=settings.ray_num_cpus,
                    include_dashboard=False,
                    object_store_memory=256 * 2**20,
                    runtime_env={"env_vars": env},
                    log_to_driver=False,
                )
            else:
                ray.init(address=settings.ray_address, runtime_env={"env_vars": env})
        self._task = ray.remote(task or evaluate_json).options(
            num_cpus=settings.trial_num_cpus, max_retries=1
        )
        self._verify = ray.remote(verify_json).options(
            num_cpus=settings.trial_num_cpus, max_retries=1
        )
        self.capacity = self.capacity_for(0)
        log.info("ray ready: %s, %d trials in flight", ray.cluster_resources(), self.capacity)  # type: ignore[no-untyped-call]

    def capacity_for(self, gpus: float) -> int:
        """Trials that fit the cluster at once, each taking ``trial_num_cpus`` CPUs and
        ``gpus`` GPUs (``max_in_flight`` caps it when set)."""
        res = self._ray.cluster_resources()  # type: ignore[no-untyped-call]
        k = int(float(res.get("CPU", 1)) // self._cpus)
        if gpus:
            have = float(res.get("GPU", 0))
            if have < gpus:  # its trials would wait for a GPU forever
                from service.scheduler.intake import NoGpuError

                raise NoGpuError(
                    f"the job probes a CUDA profile, and the Ray cluster has {have:g} GPUs "
                    f"(each trial needs {gpus:g}): {res}"
                )
            k = min(k, int(have // gpus))
        return max(1, min(k, self._max_in_flight or k))

    def submit(self, request: EvalRequest) -> Any:
        gpus = request.num_gpus
        task = self._task.options(num_gpus=gpus) if gpus else self._task
        return task.remote(request.model_dump(mode="json"))

    def wait(self, handles: list[Any], timeout_s: float) -> list[Any]:
        """Every handle that is ready: waits up to ``timeout_s`` for the first, then takes the
        others already done (one call per result cost 56 ms a call with 256 in flight)."""
        ready, rest = self._ray.wait(handles, num_returns=1, timeout=timeout_s)
        if ready and rest:
            more, _ = self._ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        return list(ready)

    def result(self, handle: Any) -> EvalResult:
        # called for a handle ray.wait returned: the timeout only bounds a lost object
        return EvalResult.model_validate(self._ray.get(handle, timeout=RESULT_TIMEOUT_S))

    def verify(self, request: VerifyRequest) -> Any:
        gpus = request.num_gpus
        task = self._verify.options(num_gpus=gpus) if gpus else self._verify
        return task.remote(request.model_dump(mode="json"))

    def verify_result(self, handle: Any) -> VerifyResult:
        return VerifyResult.model_validate(self._ray.get(handle, timeout=RESULT_TIMEOUT_S))

    def cancel(self, handle: Any) -> None:
        self._ray.cancel(handle, force=True)

    def health(self) -> tuple[bool, str]:
        """Whether Ray answers with CPUs to run trials on, and what it says."""
        try:
            if not self._ray.is_initialized():
                return False, "ray is not initialised"
            res = self._ray.cluster_resources()  # type: ignore[no-untyped-call]
        except Exception as e:  # noqa: BLE001 - a health answer, not a failure
            return False, f"ray does not answer: {type(e).__name__}: {e}"
        cpus = float(res.get("CPU", 0))
        return cpus > 0, f"{cpus:g} CPUs, {float(res.get('GPU', 0)):g} GPUs"

    def shutdown(self) -> None:
        self._ray.shutdown()
