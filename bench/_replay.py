"""Searches replayed against the surrogate: the service's own samplers, encoding and
duplicate refusal (``service.scheduler.samplers`` / ``proposals``), K trials in flight as the
scheduler keeps them, values told as the service tells them (accuracy, latency ms, size bytes).
"""

from __future__ import annotations

import heapq
import time
import warnings
from collections import deque
from collections.abc import Callable
from typing import Any

import optuna

from search_spaces import Candidate, SearchSpace, SpaceContext, get_space
from service.scheduler import samplers
from service.scheduler.fidelity import Ladder
from service.scheduler.proposals import Proposer, SpaceExhaustedError

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

DIRECTIONS = ["maximize", "minimize", "minimize"]
NO_COMPRESSION = {
    "wbits": [32],
    "codebook_bits": [0],
    "abits": [32],
    "sparsity": [0.0],
    "prune": [0.0],
    "rank": [1.0],
    "head_wbits": [32],
}
COMPRESSION_SUFFIXES = ("wbits", "codebook_bits", "abits", "sparsity", "prune", "rank")


def make_space(name: str, shape: tuple[int, ...], overrides: dict[str, Any]) -> SearchSpace:
    return get_space(name)(SpaceContext(input_shape=shape, num_classes=10), overrides)


# name -> (sampler name, flat encoding, extra build kwargs); "default" is added by plan("auto")
STRATEGIES: dict[str, tuple[str, bool, dict[str, Any]]] = {
    "random": ("random", False, {}),
    "tpe": ("tpe", False, {}),
    "tpe-startup4": ("tpe", False, {"startup": 4}),
    "tpe-flat": ("tpe", True, {}),
    "nsga2": ("nsga2", True, {}),
    "nsga2-native-pop20": ("nsga2", False, {"population": 20}),
    "nsga2-flat-pop40": ("nsga2", True, {"population": 40}),
    "gp": ("gp", True, {}),
}


def build_sampler(
    strategy: str, seed: int, budget: int, fixed: dict[str, Any] | None = None
) -> tuple[optuna.samplers.BaseSampler, bool]:
    name, flat, kw = STRATEGIES[strategy]
    plan = samplers.SamplerPlan(name, flat, "bench")
    return samplers.build(plan, seed=seed, trials=budget, fixed_params=fixed, **kw), flat


Predict = Callable[[Candidate], dict[str, float]]


def run_search(
    predict: Predict,
    space: SearchSpace,
    sampler: optuna.samplers.BaseSampler,
    *,
    flat: bool,
    budget: int,
    seed: int,
    capacity: int = 2,
    fixed: dict[str, Any] | None = None,
    directions: list[str] | None = None,
) -> dict[str, Any]:
    """``budget`` results of one search: points in completion order, duplicates refused,
    sampler seconds."""
    directions = directions or DIRECTIONS
    study = optuna.create_study(directions=directions, sampler=sampler)  # type: ignore[arg-type]
    proposer = Proposer(space, flat=flat, seed=seed, fixed_params=fixed)
    in_flight: deque[tuple[optuna.trial.Trial, Candidate]] = deque()
    points: list[dict[str, Any]] = []
    ask_s = 0.0
    exhausted = False
    while len(points) < budget:
        while not exhausted and len(in_flight) < capacity and len(points) + len(in_flight) < budget:
            t0 = time.perf_counter()
            try:
                in_flight.append(proposer.propose(study))
            except SpaceExhaustedError:
                exhausted = True
            ask_s += time.perf_counter() - t0
        if not in_flight:
            break
        trial, cand = in_flight.popleft()
        p = predict(cand)
        values = [p["accuracy"], p["latency_ms"], p["size_bytes"]][: len(directions)]
        t0 = time.perf_counter()
        study.tell(trial, values)
        ask_s += time.perf_counter() - t0
        points.append({"trial": len(points), **p, "params": trial.params, "cand": cand})
    return {"points": points, "duplicates_refused": proposer.duplicates, "sampler_s": ask_s}


def sequential(
    predict: Predict, space_name: str, shape: tuple[int, ...], budget: int, seed: int
) -> dict[str, Any]:
    """Half the budget: TPE on the architecture alone for accuracy (uncompressed); the other
    half: the default sampler over the compression of the most accurate architecture."""
    half = budget // 2
    arch_space = make_space(space_name, shape, NO_COMPRESSION)
    tpe, _ = build_sampler("tpe", seed, half)
    arch = run_search(
        predict, arch_space, tpe, flat=False, budget=half, seed=seed, directions=["maximize"]
    )
    best = max(arch["points"], key=lambda p: p["accuracy"])
    fixed = {k: v for k, v in best["params"].items() if not k.endswith(COMPRESSION_SUFFIXES)}
    space = make_space(space_name, shape, {})
    plan = samplers.plan("auto", space_name, budget - half)
    sampler = samplers.build(plan, seed=seed, trials=budget - half, fixed_params=fixed)
    comp = run_search(
        predict, space, sampler, flat=plan.flat, budget=budget - half, seed=seed, fixed=fixed
    )
    for i, p in enumerate(comp["points"]):
        p["trial"] = half + i
    return {
        "points": arch["points"] + comp["points"],
        "duplicates_refused": arch["duplicates_refused"] + comp["duplicates_refused"],
        "sampler_s": arch["sampler_s"] + comp["sampler_s"],
    }


def timed_search(
    predict: Predict,
    low: Any,
    space: SearchSpace,
    sampler: optuna.samplers.BaseSampler,
    *,
    flat: bool,
    seed: int,
    wall_s: float,
    fractions: list[float],
    eta: int = 3,
    slots: int = 2,
) -> list[dict[str, Any]]:
    """A search on a simulated clock with ``slots`` workers until ``wall_s``: each evaluation
    takes the surrogate's in-task seconds (times the low rung's measured ratio at the low
    rung). With two ``fractions`` it is the service's successive halving (:class:`Ladder`,
    promotion by Pareto rank); with ``[1.0]`` every trial runs at full budget. Returns the
    full-fidelity results with their finish times."""
    study = optuna.create_study(directions=DIRECTIONS, sampler=sampler)  # type: ignore[arg-type]
    proposer = Proposer(space, flat=flat, seed=seed)
    ladder = Ladder(fractions, eta, DIRECTIONS)
    events: list[tuple[float, int, int, Any, Candidate]] = []  # (finish, tiebreak, rung, ...)
    clock, n, done = 0.0, 0, []
    free = slots

    def start(trial: Any, cand: Candidate, rung: int, at: float) -> None:
        nonlocal n
        p = predict(cand)
        dur = p["trial_s"] * (low.time_ratio if rung < ladder.top else 1.0)
        n += 1
        heapq.heappush(events, (at + dur, n, rung, trial, cand))

    while True:
        while free > 0:
            try:
                trial, cand = proposer.propose(study)
            except SpaceExhaustedError:
                break
            start(trial, cand, 0, clock)
            free -= 1
        if not events:
            break
        clock, _, rung, trial, cand = heapq.heappop(events)
        if clock > wall_s:
            break
        p = predict(cand)
        key = cand.structural_hash()
        acc = p["accuracy"] if rung == ladder.top else low.accuracy(key, p["accuracy"])
        values = [acc, p["latency_ms"], p["size_bytes"]]
        if rung < ladder.top and ladder.promote(rung, trial.number, values, 0.0):
            start(trial, cand, rung + 1, clock)  # the slot goes on to the next rung
            continue
        free += 1
        if rung < ladder.top:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        study.tell(trial, values)
        done.append({"trial": len(done), "wall_s": clock, **p})
    return done
