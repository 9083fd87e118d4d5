"""The samplers a job may use, how each sees the space, and which one ``"auto"`` picks.

Every sampler here works on the spaces' conditional parameters; the evolutionary and GP ones
are given the flat fixed-length encoding (:func:`search_spaces.sample_flat`: every gene in
every trial, inactive ones carried but ignored), since Optuna's NSGA-II evolves, and its GP
models, only the parameters all trials share. Constraints reach every sampler through
``trial.set_constraint`` (Optuna 5 reads them from the trial).

``"auto"`` is chosen by measurement (``bench/search.py`` on the surrogate of real evaluations,
``bench/results/search.json``): see :data:`AUTO`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal

import optuna

SamplerName = Literal["auto", "tpe", "nsga2", "gp", "random"]


@dataclass(frozen=True)
class SamplerPlan:
    """A resolved sampler: its name, whether it sees the flat encoding, and why it was picked."""

    name: str
    flat: bool
    reason: str

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "flat_encoding": self.flat, "reason": self.reason}


# What "auto" resolves to, per space: (largest trial budget, sampler), first match wins; the
# last entry covers every larger budget. Measured on the surrogate benchmark (median of 5+
# seeds; bench/results/search.json, "sampler_choice"); spaces not measured use DEFAULT_AUTO.
AUTO: dict[str, list[tuple[int, str]]] = {
    "small_joint": [(10**9, "tpe")],
    "cnn_joint": [(10**9, "tpe")],
}
DEFAULT_AUTO = "tpe"
FLAT = {"nsga2": True, "gp": True, "tpe": False, "random": False}


def plan(sampler: str, space: str, trials: int) -> SamplerPlan:
    """Resolve a job's ``sampler`` for its space and trial budget."""
    if sampler != "auto":
        return SamplerPlan(sampler, FLAT[sampler], "asked for by the job")
    for limit, name in AUTO.get(space, []):
        if trials <= limit:
            return SamplerPlan(name, FLAT[name], f"auto: best measured on {space} at this budget")
    return SamplerPlan(
        DEFAULT_AUTO, FLAT[DEFAULT_AUTO], f"auto: {space} not measured; the overall default"
    )


def nsga2_population(trials: int) -> int:
    """NSGA-II population for a trial budget: about ten generations, 8 to 50 per generation."""
    return max(8, min(50, trials // 10))


def tpe_startup(trials: int) -> int:
    """Random trials before TPE models: few, since every trial is dear."""
    return max(4, min(10, trials // 10))


def build(
    p: SamplerPlan,
    *,
    seed: int,
    trials: int,
    fixed_params: dict[str, Any] | None = None,
    population: int | None = None,
    startup: int | None = None,
) -> optuna.samplers.BaseSampler:
    """The seeded sampler of plan ``p`` (``population`` / ``startup`` override the sizes
    derived from ``trials``, for benchmarks)."""
    with warnings.catch_warnings():  # TPE's group, GP, PartialFixedSampler are "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler: optuna.samplers.BaseSampler
        if p.name == "random":
            sampler = optuna.samplers.RandomSampler(seed=seed)
        elif p.name == "tpe":
            sampler = optuna.samplers.TPESampler(
                seed=seed,
                multivariate=True,
                group=not p.flat,  # conditional (native) parameters: one model per branch
                constant_liar=True,  # K trials in flight
                n_startup_trials=startup if startup is not None else tpe_startup(trials),
            )
        elif p.name == "gp":
            sampler = optuna.samplers.GPSampler(
                seed=seed,
                n_startup_trials=startup if startup is not None else tpe_startup(trials),
                warn_independent_sampling=False,
            )
        elif p.name == "nsga2":
            sampler = optuna.samplers.NSGAIISampler(
                population_size=population or nsga2_population(trials), seed=seed
            )
        else:
            raise ValueError(f"sampler {p.name!r}: not one of {sorted(FLAT)}")
        if fixed_params:
            sampler = optuna.samplers.PartialFixedSampler(dict(fixed_params), sampler)
    return sampler


def random_redraw(seed: int, fixed_params: dict[str, Any] | None) -> optuna.samplers.BaseSampler:
    """The sampler of a redraw after the job's sampler kept proposing evaluated candidates."""
    return build(
        SamplerPlan("random", False, "redraw"), seed=seed, trials=1, fixed_params=fixed_params
    )
