"""A bound on one result metric (a job constraint), shared by the scheduler and the workers."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Constraint:
    """``metric`` (a study metric: ``accuracy``, ``size_bytes``, ``latency_ms@<profile>``,
    ``macs``, ``bitops``) ``op`` (``<=`` or ``>=``) ``bound`` (in the metric's unit)."""

    text: str
    metric: str
    op: str
    bound: float

    @property
    def before_training(self) -> bool:
        """Known from the structure alone (latency, size, compute), so it can pre-filter."""
        return self.metric != "accuracy"

    def violation(self, value: float) -> float:
        """<= 0 when satisfied, else the excess relative to the bound (Optuna's convention;
        relative, so violations in ms and in bytes add up comparably)."""
        scale = abs(self.bound) or 1.0
        d = (value - self.bound) if self.op == "<=" else (self.bound - value)
        return d / scale

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
