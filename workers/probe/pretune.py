"""Pre-tune the workloads a search space produces, so jobs find their tasks already tuned.

Widths, kernels, ranks and prune ratios come from finite sets, so the tasks candidates bring
repeat. This samples candidates of a space (seeded, uniformly), lowers each one's compressed
structure, collects the distinct tuning tasks and tunes those the profile's database lacks,
heaviest first. Records are committed as each chunk finishes: an interrupted run resumes.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hw_profiles import Profile
from search_spaces import Candidate, SearchSpace
from workers.models import example_input
from workers.probe import tuning
from workers.probe.lowering import deployable, to_relax
from workers.probe.structure import structural_model
from workers.probe.targets import resolve_target
from workers.records import NetworkSource


class _RandomTrial:
    """The part of an Optuna trial a space's ``sample`` uses, drawing uniformly."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self.rng.choice(list(choices))


def sample_candidates(space: SearchSpace, n: int, seed: int = 0) -> list[Candidate]:
    rng = random.Random(seed)
    return [space.sample(_RandomTrial(rng)) for _ in range(n)]


def candidate_tasks(
    cand: Candidate,
    profile: Profile,
    target: Any,
    equality: str | None = None,
    network: NetworkSource | None = None,
) -> list[Any]:
    """The tuning tasks of ``cand``'s compressed structure on ``profile`` (deduplicated by
    ``equality``, default the database's); ``network``: the upload a network candidate
    compresses."""
    dep, _ = deployable(structural_model(cand, network=network), profile)
    mod = to_relax(dep, example_input(cand), profile)
    return tuning.extract(tuning.fuse(mod, target), target, equality)


def pretune(
    profile: Profile,
    candidates: list[Candidate],
    tuning_root: Path,
    *,
    budget_s: float | None = None,
    settings: tuning.TuneSettings | None = None,
    log: Callable[[str], None] = print,
    network: NetworkSource | None = None,
) -> dict[str, Any]:
    """Tune every task of ``candidates`` that ``profile``'s database lacks.

    Returns:
        ``candidates``, ``tasks`` (distinct), ``already_tuned``, ``tuned``, ``failed``,
        ``skipped`` (budget ran out), ``seconds``, ``db`` (its directory).
    """
    t0 = time.perf_counter()
    target = resolve_target(profile)
    found: dict[str, Any] = {}
    for i, cand in enumerate(candidates):
        for task in candidate_tasks(cand, profile, target, network=network):
            found.setdefault(tuning.task_key(task), task)
        log(f"lowered {i + 1}/{len(candidates)} candidates: {len(found)} distinct tasks")
    path = tuning.db_dir(tuning_root, profile, target)
    with tuning.db_lock(path):
        db = tuning.open_db(path)
        todo = tuning.missing(list(found.values()), db)
        log(f"{len(found) - len(todo)} tasks already tuned, {len(todo)} to tune ({path})")

        def progress(done: int, total: int, names: str) -> None:
            log(f"[{done}/{total}] {time.perf_counter() - t0:.0f}s  {names}")

        remaining = None if budget_s is None else max(0.0, budget_s - (time.perf_counter() - t0))
        report = tuning.tune(
            todo,
            db,
            path / "work",
            settings=settings or tuning.TuneSettings(),
            budget_s=remaining,
            progress=progress,
            profile=profile,
            cost_model_path=tuning.cost_model_path(path),
        )
        tuning.restamp(path, db)
    return {
        "candidates": len(candidates),
        "tasks": len(found),
        "already_tuned": len(found) - len(todo),
        **{k: report[k] for k in ("tuned", "failed", "skipped", "cost_model")},
        "seconds": round(time.perf_counter() - t0, 1),
        "db": str(path),
    }
