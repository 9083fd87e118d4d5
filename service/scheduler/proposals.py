"""Ask the sampler for the next candidate, never one the job has already evaluated.

A candidate is identified by its ``structural_hash`` (architecture, compression and
distillation: what determines its result). One the job evaluated (COMPLETE, pre-filter
rejected or pruned by successive halving) or has in flight is never trained again: its trial
is FAILed with ``fail_kind = "duplicate"`` and ``duplicate_of`` (not counted against
``max_failed``, ignored by the samplers) and the sampler is asked again. A sampler that keeps
proposing evaluated candidates (a converged TPE, a resumed seeded sampler replaying its first
draws) gets :data:`REDRAWS` tries, then the draw is made by a random sampler and the trial is
marked ``sampled_by = "random-redraw"``; when random draws repeat too, the space is exhausted
and the job ends with what it has.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import TrialState as OptunaState

from search_spaces import Candidate, SearchSpace, sample_flat
from service.scheduler import samplers

log = logging.getLogger(__name__)

REDRAWS = 5  # sampler proposals of evaluated candidates before a random redraw
RANDOM_REDRAWS = 50  # random redraws before the space counts as exhausted
EVALUATED = (OptunaState.COMPLETE, OptunaState.PRUNED)


class SpaceExhaustedError(RuntimeError):
    """Every draw, the sampler's and random ones, gave a candidate the job has evaluated."""


class SamplingError(RuntimeError):
    """The space could not build a candidate from the trial's parameters."""

    def __init__(self, trial: optuna.trial.Trial, cause: Exception) -> None:
        super().__init__(f"sampling failed: {type(cause).__name__}: {cause}")
        self.trial = trial


class _Pinned:
    """The trial as the space sees it: a pinned parameter's choices include its pinned value, so
    a job may pin a value its overrides (or the defaults) leave out. The choices are the same
    in every trial of the job, so each parameter keeps one distribution."""

    def __init__(self, trial: optuna.trial.Trial, fixed: dict[str, Any]) -> None:
        self.trial, self.fixed = trial, fixed

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        if name in self.fixed and self.fixed[name] not in choices:
            choices = (*choices, self.fixed[name])
        return self.trial.suggest_categorical(name, choices)


class Proposer:
    def __init__(
        self,
        space: SearchSpace,
        *,
        flat: bool,
        seed: int,
        fixed_params: dict[str, Any] | None = None,
    ) -> None:
        self.space, self.flat = space, flat
        self.seed, self.fixed_params = seed, dict(fixed_params or {})
        self.seen: dict[str, int] = {}  # hash -> the trial that holds it
        self.duplicates = 0  # proposals refused this run
        self.random_draws = 0  # draws made by a random sampler instead

    def restore(self, study: optuna.Study) -> None:
        """What the job evaluated before (a restart, an extension)."""
        self.seen.clear()
        for t in study.get_trials(deepcopy=False, states=EVALUATED):
            digest = t.user_attrs.get("candidate_hash")
            if digest:
                self.seen.setdefault(digest, t.number)

    def release(self, digest: str) -> None:
        """A trial in flight failed or was cancelled: its candidate may be tried again."""
        self.seen.pop(digest, None)

    def propose(self, study: optuna.Study) -> tuple[optuna.trial.Trial, Candidate]:
        """A new trial and its candidate, not one the job has evaluated or has in flight.

        Raises:
            SamplingError: the space could not sample the trial (the trial is left RUNNING
                for the caller to fail).
            SpaceExhaustedError: no draw found a new candidate.
        """
        for attempt in range(REDRAWS + RANDOM_REDRAWS):
            trial, cand = self._draw(study, randomly=attempt >= REDRAWS, attempt=attempt)
            digest = cand.structural_hash()
            first = self.seen.get(digest)
            if first is None:
                self.seen[digest] = trial.number
                if attempt >= REDRAWS:
                    trial.set_user_attr("sampled_by", "random-redraw")
                return trial, cand
            self.duplicates += 1
            trial.set_user_attr("duplicate_of", first)
            trial.set_user_attr("candidate_hash", digest)
            trial.set_user_attr("fail_kind", "duplicate")
            trial.set_user_attr("error", f"candidate of trial {first}: not trained again")
            study.tell(trial, state=OptunaState.FAIL)
        raise SpaceExhaustedError(
            f"{REDRAWS} proposals of the sampler and {RANDOM_REDRAWS} random draws all gave "
            f"candidates the job has evaluated ({len(self.seen)} distinct): the space is exhausted"
        )

    def _draw(
        self, study: optuna.Study, *, randomly: bool, attempt: int
    ) -> tuple[optuna.trial.Trial, Candidate]:
        """Ask and sample one trial, by the study's sampler or (``randomly``) by a random one:
        the sampler stays swapped while the space samples, since a trial's independent
        parameters are drawn by ``study.sampler`` when they are suggested."""
        own = study.sampler
        if randomly:
            self.random_draws += 1
            study.sampler = samplers.random_redraw(
                self.seed * 1_000_003 + attempt + len(self.seen), self.fixed_params
            )
        try:
            trial = study.ask()
            pinned = _Pinned(trial, self.fixed_params)
            try:
                cand = sample_flat(self.space, pinned) if self.flat else self.space.sample(pinned)
            except Exception as e:
                raise SamplingError(trial, e) from e
            return trial, cand
        finally:
            study.sampler = own
