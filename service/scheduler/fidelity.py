"""Multi-objective successive halving: promote by Pareto rank among the results of a rung.

Optuna's pruners and Ray Tune's schedulers rank by one number. Here a rung holds every result
evaluated at that fidelity (epoch fraction); a new result is promoted to the next rung when it
lies in the best ``max(1, n // eta)`` of the rung's ``n`` results, ordered by: feasible before
infeasible (then by total violation), non-domination rank, then crowding distance (more
isolated first). The decision is made once, when the result arrives, as in asynchronous
successive halving, so K trials stay in flight and nothing waits for a rung to fill.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


def nondomination_ranks(losses: np.ndarray) -> np.ndarray:
    """Rank 0 for the non-dominated rows of ``losses`` (n x m, minimized), 1 for the next
    front, and so on."""
    n = len(losses)
    ranks = np.full(n, -1, dtype=int)
    left = np.arange(n)
    rank = 0
    while left.size:
        sub = losses[left]
        le = (sub[:, None, :] <= sub[None, :, :]).all(-1)
        lt = (sub[:, None, :] < sub[None, :, :]).any(-1)
        dominated = (le & lt).any(0)  # column j dominated by some row i
        ranks[left[~dominated]] = rank
        left = left[dominated]
        rank += 1
    return ranks


def crowding(losses: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of each row within ``losses`` (one front)."""
    n, m = losses.shape
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(m):
        order = np.argsort(losses[:, j], kind="stable")
        span = losses[order[-1], j] - losses[order[0], j]
        dist[order[0]] = dist[order[-1]] = np.inf
        if span > 0:
            dist[order[1:-1]] += (losses[order[2:], j] - losses[order[:-2], j]) / span
    return dist


def order(losses: np.ndarray, penalties: np.ndarray) -> np.ndarray:
    """Indices of the rows from best to worst (see the module docstring)."""
    n = len(losses)
    feasible = penalties <= 0
    key_rank = np.zeros(n)
    key_crowd = np.zeros(n)
    idx = np.flatnonzero(feasible)
    if idx.size:
        ranks = nondomination_ranks(losses[idx])
        key_rank[idx] = ranks
        for r in np.unique(ranks):
            members = idx[ranks == r]
            key_crowd[members] = -crowding(losses[members])
    infeasible = np.flatnonzero(~feasible)
    key_rank[infeasible] = np.inf
    key_crowd[infeasible] = penalties[infeasible]
    return np.lexsort((key_crowd, key_rank))


@dataclass
class Ladder:
    """The rungs of a job: epoch ``fractions`` (last = 1.0, full budget) and their results."""

    fractions: list[float]
    eta: int
    directions: Sequence[str]
    results: dict[int, dict[int, tuple[list[float], float]]] = field(default_factory=dict)

    @property
    def top(self) -> int:
        return len(self.fractions) - 1

    def record(self, rung: int, trial: int, values: list[float], penalty: float) -> None:
        self.results.setdefault(rung, {})[trial] = (list(values), float(penalty))

    def promote(self, rung: int, trial: int, values: list[float], penalty: float) -> bool:
        """Record ``trial``'s result at ``rung``; True when it goes on to the next rung."""
        self.record(rung, trial, values, penalty)
        entries = self.results[rung]
        numbers = list(entries)
        sign = np.array([-1.0 if d == "maximize" else 1.0 for d in self.directions])
        losses = np.array([entries[k][0] for k in numbers], dtype=float) * sign
        penalties = np.array([entries[k][1] for k in numbers], dtype=float)
        keep = max(1, len(numbers) // self.eta)
        best = [numbers[i] for i in order(losses, penalties)[:keep]]
        return trial in best
