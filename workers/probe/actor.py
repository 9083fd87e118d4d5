"""Warm probe workers: one Ray actor per (profile, node), shared by every trial on that node.

Importing TVM costs ~3 s, the CPU tensor intrinsics ~1 s more, and a tuning database is
re-read on open; an actor pays that once. One actor per node also serialises TVM compile,
tuning and timing there, so two trials never tune or time at once on the same cores; while it
times, the node's timing lease (:mod:`workers.lease`) holds the trials that train beside it.
Outside Ray (tests, scripts) :func:`probe_warm` probes in-process.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hw_profiles import get_profile
from workers import faults, progress
from workers.probe.core import ProbeOptions, probe
from workers.probe.errors import ProbeTransientError
from workers.records import ProbeStats

log = logging.getLogger(__name__)
NAMESPACE = "hwnas"
PROBE_TIMEOUT_S = float(os.environ.get("HWNAS_PROBE_TIMEOUT_S") or 3600)
"""Longest a trial waits for its probe (compile, tuning, timing) before it counts as a device
failure; the trial's own deadline bounds it too."""


class ProbeWorker:
    """The actor's body: warms TVM up at start, then probes on request."""

    def __init__(self, profile: str) -> None:
        from workers.probe._intrin import load_cpu_intrinsics
        from workers.probe.targets import resolve_target

        self.profile = get_profile(profile)
        resolve_target(self.profile)  # imports TVM
        load_cpu_intrinsics()
        self.calls = 0

    def probe(
        self,
        model: nn.Module,
        example: torch.Tensor,
        options: ProbeOptions,
        check_inputs: torch.Tensor | None,
        library_path: str | None,
    ) -> ProbeStats:
        self.calls += 1
        faults.point("mid_probe")
        with progress.reporting(options.progress_path):
            stats = probe(
                model,
                example,
                self.profile,
                options=options,
                check_inputs=check_inputs,
                library_path=Path(library_path) if library_path else None,
            )
        return stats.model_copy(update={"probe_worker_calls": self.calls})

    def ping(self) -> int:
        return self.calls


def actor_name(profile: str, node_id: str) -> str:
    return f"probe:{profile}:{node_id[:12]}"


def get_actor(profile: str) -> Any:
    """This node's probe actor for ``profile`` (created on first use, then reused)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node_id = ray.get_runtime_context().get_node_id()
    cls = ray.remote(ProbeWorker)
    return cls.options(
        name=actor_name(profile, node_id),
        namespace=NAMESPACE,
        get_if_exists=True,
        lifetime="detached",  # outlives the trial that created it; dies with the cluster
        num_cpus=0,  # it works between trials' CPU slots; trials keep their accounting
        max_restarts=1,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
    ).remote(profile)


def probe_warm(
    model: nn.Module,
    example: torch.Tensor,
    profile: str,
    *,
    options: ProbeOptions,
    check_inputs: torch.Tensor | None = None,
    library_path: Path | None = None,
) -> ProbeStats:
    """Probe through this node's warm actor when running inside Ray, else in-process.

    Errors raised in the actor come back as the same probe errors (the actor re-raises them).
    """
    import ray

    if not ray.is_initialized():
        return probe(
            model,
            example,
            get_profile(profile),
            options=options,
            check_inputs=check_inputs,
            library_path=library_path,
        )
    lib = str(library_path) if library_path else None
    for attempt in (1, 2):
        actor = get_actor(profile)
        ref = actor.probe.remote(model, example, options, check_inputs, lib)
        try:
            out: ProbeStats = ray.get(ref, timeout=PROBE_TIMEOUT_S)
            return out
        except ray.exceptions.RayTaskError as e:
            raise e.as_instanceof_cause() from None
        except ray.exceptions.GetTimeoutError:
            ray.cancel(ref)
            raise ProbeTransientError(
                f"the probe actor of {profile!r} did not answer within {PROBE_TIMEOUT_S:.0f} s"
            ) from None
        except ray.exceptions.RayActorError as e:  # the actor died mid-probe (killed, OOM)
            if attempt == 2:
                raise ProbeTransientError(
                    f"the probe actor of {profile!r} died twice: {str(e).splitlines()[0]}"
                ) from None
            log.warning("probe actor of %s died mid-probe; asking a new one", profile)
            with contextlib.suppress(Exception):
                ray.kill(actor)  # a dead name is freed for the next get_actor
    raise AssertionError("unreachable")
