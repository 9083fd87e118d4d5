"""A flat, fixed-length encoding of a conditional space: every gene in every trial.

A space's ``sample`` asks only for the parameters of the branch it takes (``family`` ->
``cnn.*``, ``depth`` -> ``layer<i>.*``), so a sampler that learns from the parameters all
trials share (Optuna's NSGA-II, GP) sees few of them. :func:`sample_flat` first asks the trial
for *every* gene the space can ever ask for, in one fixed order, then lets the space sample:
the space's own calls get the values already drawn (same name, same choices), and the genes of
branches not taken are carried but ignored. Which genes exist is found by exploring the space
(:func:`genes`), since ``sample`` is the only description of its conditional structure.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

from search_spaces._candidate import Candidate
from search_spaces._space import SearchSpace, TrialLike

# exploration stops after this many draws in a row found no new gene (a gene active with
# probability p is missed with probability (1 - p) ** QUIET; p >= 1/50 in the built-in spaces)
QUIET = 600
MAX_DRAWS = 50_000

_cache: dict[str, dict[str, tuple[Any, ...]]] = {}


class _Explorer:
    """A trial that draws uniformly and records every (name, choices) asked."""

    def __init__(self, rng: random.Random, seen: dict[str, tuple[Any, ...]]) -> None:
        self.rng, self.seen, self.new = rng, seen, 0

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        values = tuple(choices)
        known = self.seen.get(name)
        if known is None:
            self.seen[name] = values
            self.new += 1
        elif known != values:
            raise ValueError(
                f"space asks for {name!r} with choices {values} after {known}: a flat encoding "
                "needs one set of choices per parameter name"
            )
        return self.rng.choice(values)


def _key(space: SearchSpace) -> str:
    network = getattr(space, "network", None)  # an upload's space: its groups name the genes
    return json.dumps(
        [
            type(space).__qualname__,
            None if network is None else network.digest,
            space.granularity,
            space.context.model_dump(mode="json"),
            sorted((k, list(v)) for k, v in space.choices.items()),
        ],
        default=str,
    )


def genes(space: SearchSpace) -> dict[str, tuple[Any, ...]]:
    """Every parameter ``space`` can ask for, with its choices, in first-asked order.

    Deterministic for a space's choices and context (seeded exploration), so a restarted job
    gets the same encoding.

    Raises:
        ValueError: the space asks for one name with different choices in different branches.
    """
    key = _key(space)
    if key not in _cache:
        rng = random.Random(0)
        seen: dict[str, tuple[Any, ...]] = {}
        quiet = 0
        for _ in range(MAX_DRAWS):
            explorer = _Explorer(rng, seen)
            space.sample(explorer)
            quiet = 0 if explorer.new else quiet + 1
            if quiet >= QUIET:
                break
        _cache[key] = seen
    return dict(_cache[key])


def sample_flat(space: SearchSpace, trial: TrialLike) -> Candidate:
    """Ask ``trial`` for every gene of ``space`` (fixed order), then sample the candidate."""
    for name, choices in genes(space).items():
        trial.suggest_categorical(name, choices)
    return space.sample(trial)
