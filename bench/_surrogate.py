"""A surrogate of real evaluations (YAHPO / HPOBench style), fitted to the committed table.

Size, MACs and BitOps are not learned: they are computed exactly from the candidate's
compressed structure (the pre-filter's structural model and packed size: what the trained
candidate ships). Accuracy, log latency and log in-task seconds are learned by extremely
randomised trees from features of that structure and of the candidate's choices. The held-out
error (K-fold, by candidate) is reported per objective; the replayed searches run against the
fitted models, deterministic per candidate (every sampler sees the same function).
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any

import numpy as np
from scipy.stats import spearmanr
from sklearn.ensemble import ExtraTreesRegressor
from sklearn.model_selection import KFold

from search_spaces import Candidate
from workers.compress.pack import packed_size
from workers.cost import compute_cost
from workers.models import example_input
from workers.probe.structure import structural_model

FORMATS = ("float", "int", "ternary", "binary", "kmeans")
TARGETS = ("accuracy", "log_latency", "log_trial_s")


class Structure:
    """Exact size / MACs / BitOps of candidates, cached by structural hash."""

    def __init__(self) -> None:
        self.cache: dict[str, dict[str, int]] = {}

    def of(self, cand: Candidate) -> dict[str, int]:
        key = cand.structural_hash()
        if key not in self.cache:
            net = structural_model(cand)
            cost = compute_cost(net, example_input(cand))
            self.cache[key] = {"size_bytes": packed_size(net), **cost}
        return self.cache[key]


def features(cand: Candidate, structure: dict[str, int]) -> list[float]:
    """A fixed-length description of a candidate: its structure's cost and its choices."""
    layers = [s for s in cand.stages for _ in range(max(1, s.depth))]
    n = len(layers)
    fmt = [s.wformat for s in layers]
    int8 = [s.wformat in ("int", "ternary", "binary") and s.abits <= 8 for s in layers]
    bits = [float(s.wbits) for s in layers]
    kd = cand.distill
    return [
        math.log10(max(1, structure["size_bytes"])),
        math.log10(max(1, structure["macs"])),
        math.log10(max(1, structure["bitops"])),
        float(n),
        float(cand.family == "mlp"),
        float(cand.family == "cnn"),
        float(np.mean([s.width for s in layers])),
        float(min(s.width for s in layers)),
        float(np.mean([s.kernel for s in layers])),
        float(np.mean([s.expand for s in layers])),
        float(np.mean(bits)),
        float(min(bits)),
        bits[0],
        bits[-1],
        *[sum(f == k for f in fmt) / n for k in FORMATS],
        sum(int8) / n,
        float(np.mean([s.sparsity for s in layers])),
        float(np.mean([s.prune for s in layers])),
        float(max(s.prune for s in layers)),
        float(np.mean([s.rank for s in layers])),
        float(min(s.rank for s in layers)),
        float(cand.head_wbits),
        float(kd.alpha) if kd else 0.0,
        float(kd.relation > 0) if kd else 0.0,
    ]


def _model(seed: int = 0) -> ExtraTreesRegressor:
    return ExtraTreesRegressor(n_estimators=300, min_samples_leaf=2, random_state=seed, n_jobs=1)


class Surrogate:
    """Fitted to a table's full-fidelity rows (one per candidate: repeats are averaged)."""

    def __init__(self, rows: list[dict[str, Any]], structure: Structure | None = None) -> None:
        self.structure = structure or Structure()
        by_hash: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            if r["fraction"] == 1.0:
                by_hash.setdefault(r["candidate_hash"], []).append(r)
        self.hashes = sorted(by_hash)
        self.cands = [Candidate.model_validate(by_hash[h][0]["candidate"]) for h in self.hashes]
        self.x = np.array([self.featurize(c) for c in self.cands])
        self.y = np.array(
            [
                [
                    np.mean([r["accuracy"] for r in by_hash[h]]),
                    np.mean([math.log10(r["latency_ms"]) for r in by_hash[h]]),
                    np.mean([math.log10(max(0.1, r["trial_s"])) for r in by_hash[h]]),
                ]
                for h in self.hashes
            ]
        )
        self.models = [_model(i).fit(self.x, self.y[:, i]) for i in range(len(TARGETS))]
        self._memo: dict[str, dict[str, float]] = {}

    def featurize(self, cand: Candidate) -> list[float]:
        return features(cand, self.structure.of(cand))

    def predict(self, cand: Candidate) -> dict[str, float]:
        """``accuracy`` (clipped to [0, 1]), ``latency_ms``, ``size_bytes`` (exact), ``trial_s``."""
        key = cand.structural_hash()
        if key not in self._memo:
            x = np.array([self.featurize(cand)])
            acc, log_lat, log_s = (float(m.predict(x)[0]) for m in self.models)
            self._memo[key] = {
                "accuracy": min(1.0, max(0.0, acc)),
                "latency_ms": 10**log_lat,
                "size_bytes": float(self.structure.of(cand)["size_bytes"]),
                "trial_s": 10**log_s,
            }
        return self._memo[key]

    @cached_property
    def heldout(self) -> dict[str, Any]:
        """5-fold held-out error per learned target: MAE, R^2 and Spearman's rho."""
        folds = KFold(n_splits=5, shuffle=True, random_state=0)
        pred = np.zeros_like(self.y)
        for train, test in folds.split(self.x):
            for i in range(len(TARGETS)):
                pred[test, i] = _model(i).fit(self.x[train], self.y[train, i]).predict(self.x[test])
        out: dict[str, Any] = {"rows": len(self.y), "folds": 5}
        for i, name in enumerate(TARGETS):
            err = pred[:, i] - self.y[:, i]
            var = float(np.var(self.y[:, i]))
            out[name] = {
                "mae": round(float(np.mean(np.abs(err))), 4),
                "r2": round(1 - float(np.mean(err**2)) / var, 3) if var > 0 else None,
                "spearman": round(float(spearmanr(pred[:, i], self.y[:, i])[0]), 3),
            }
        out["note"] = (
            "log_latency and log_trial_s are log10; an MAE of 0.1 there is a factor of 1.26"
        )
        return out


class LowFidelity:
    """Accuracy at the low rung (a fraction of the epochs), from the full-fidelity surrogate's
    prediction by the linear map fitted on the candidates measured at both, plus that map's
    residual spread as noise (seeded per candidate, so it is a fixed function too). Its
    in-task seconds are the full prediction times the measured ratio."""

    def __init__(self, rows: list[dict[str, Any]], fraction: float) -> None:
        full = {r["candidate_hash"]: r for r in rows if r["fraction"] == 1.0}
        pairs = [
            (full[r["candidate_hash"]], r)
            for r in rows
            if r["fraction"] == fraction and r["candidate_hash"] in full
        ]
        if len(pairs) < 5:
            raise ValueError(f"{len(pairs)} rows at fraction {fraction}: too few to fit")
        hi = np.array([p[0]["accuracy"] for p in pairs])
        lo = np.array([p[1]["accuracy"] for p in pairs])
        self.slope, self.intercept = np.polyfit(hi, lo, 1)
        self.sigma = float(np.std(lo - (self.slope * hi + self.intercept)))
        self.time_ratio = float(
            np.median([p[1]["trial_s"] / max(0.1, p[0]["trial_s"]) for p in pairs])
        )
        self.fraction, self.pairs = fraction, len(pairs)
        self.rank_agreement = float(spearmanr(hi, lo)[0])

    def accuracy(self, key: str, full_accuracy: float) -> float:
        rng = np.random.default_rng(int(key[:12], 16))
        acc = self.slope * full_accuracy + self.intercept + self.sigma * rng.standard_normal()
        return float(min(1.0, max(0.0, acc)))

    def public(self) -> dict[str, Any]:
        return {
            "fraction": self.fraction,
            "pairs": self.pairs,
            "slope": round(float(self.slope), 4),
            "intercept": round(float(self.intercept), 4),
            "residual_sd": round(self.sigma, 4),
            "spearman_low_vs_full": round(self.rank_agreement, 3),
            "time_ratio": round(self.time_ratio, 3),
        }
