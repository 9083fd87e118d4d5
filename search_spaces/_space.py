"""The SearchSpace contract and the dimensions a user may narrow."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from search_spaces._candidate import Candidate


class TrialLike(Protocol):
    """The slice of ``optuna.Trial`` a space uses (kept as a protocol: no optuna import here)."""

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


class Dimension(BaseModel):
    """One searchable dimension: what it may ever take, and what is searched by default."""

    model_config = ConfigDict(frozen=True)

    name: str
    allowed: tuple[float | int | str, ...]
    default: tuple[float | int | str, ...]
    description: str = ""


# The widest classifier head any space builds: a bound on what a task may ask for, far above
# what the service accepts by default (HWNAS_MAX_CLASSES), so a stored task can never ask a
# worker for a 10**12-way layer.
MAX_CLASSES = 100_000


class SpaceContext(BaseModel):
    """What a space needs to know of the task: one sample's shape (every dimension at least 1)
    and the class count."""

    input_shape: tuple[Annotated[int, Field(ge=1)], ...] = Field(min_length=1, max_length=3)
    num_classes: int = Field(ge=2, le=MAX_CLASSES)


class SearchSpace(ABC):
    """A joint space of architectures and their compression.

    Contract: ``sample`` calls only ``trial.suggest_categorical`` with parameter names that are
    stable across trials for the same conditional branch (``layer1.wbits``), so samplers and the
    Optuna dashboard's parameter views line up. It returns a valid :class:`Candidate` for the
    context given at construction. Overrides are validated at construction; a bad one raises
    ``ValueError`` naming the dimension and the value.
    """

    name: ClassVar[str]
    description: ClassVar[str]

    def __init__(
        self,
        context: SpaceContext,
        overrides: Mapping[str, Sequence[Any]] | None = None,
        granularity: Literal["stage", "block"] = "stage",
    ) -> None:
        self.context = context
        self.granularity = granularity
        self.choices: dict[str, tuple[Any, ...]] = {d.name: d.default for d in self.dimensions()}
        for key, values in (overrides or {}).items():
            self.choices[key] = self.validate_override(key, values)
        self.check_context(context)

    @classmethod
    @abstractmethod
    def dimensions(cls) -> list[Dimension]:
        """Every dimension of the space with its allowed and default values."""

    @abstractmethod
    def sample(self, trial: TrialLike) -> Candidate:
        """Draw one candidate from ``trial``."""

    @classmethod
    def check_context(cls, context: SpaceContext) -> None:
        """Raise ``ValueError`` when the task does not fit this space (e.g. flat data for a CNN)."""
        return None  # any context fits unless a space says otherwise

    @classmethod
    def validate_override(
        cls, key: str, values: Sequence[Any] | Mapping[str, float]
    ) -> tuple[Any, ...]:
        """Check that ``values`` narrows dimension ``key``; return the choices as a tuple.

        ``values`` is a list of choices, or a range ``{"min": a, "max": b}`` (inclusive) that
        selects the allowed values of a numeric dimension inside it.
        """
        dims = {d.name: d for d in cls.dimensions()}
        if key not in dims:
            raise ValueError(f"space {cls.name!r} has no dimension {key!r}; known: {sorted(dims)}")
        allowed = dims[key].allowed
        if isinstance(values, Mapping):
            if set(values) - {"min", "max"} or not values:
                raise ValueError(f"{key}: a range has 'min' and/or 'max', got {sorted(values)}")
            lo, hi = values.get("min", float("-inf")), values.get("max", float("inf"))
            if not all(isinstance(v, int | float) for v in (lo, hi)):
                raise ValueError(f"{key}: range bounds must be numbers")
            values = [a for a in allowed if isinstance(a, int | float) and lo <= a <= hi]
            if not values:
                raise ValueError(
                    f"{key}: no allowed value in [{lo}, {hi}]; allowed: {list(allowed)}"
                )
        if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"{key}: give a non-empty list of choices or a min/max range")
        for v in values:
            if not any(_same(v, a) for a in allowed):
                raise ValueError(f"{key}: {v!r} is not allowed; choose from {list(allowed)}")
        return tuple(dict.fromkeys(values))

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """JSON-ready description: the dimensions and a JSON Schema for the overrides that
        states exactly what :meth:`validate_override` accepts."""
        dims = cls.dimensions()
        return {
            "name": cls.name,
            "description": cls.description,
            "dimensions": [d.model_dump(mode="json") for d in dims],
            "overrides_schema": {
                "type": "object",
                "additionalProperties": False,
                "properties": {d.name: _override_schema(d) for d in dims},
            },
        }


def _override_schema(d: Dimension) -> dict[str, Any]:
    """A non-empty list of allowed values, or (numeric dimensions) a range holding at least one:
    for each allowed number ``a`` a branch ``min <= a <= max``, so the union is exactly the
    ranges :meth:`SearchSpace.validate_override` accepts."""
    forms: list[dict[str, Any]] = [
        {"type": "array", "minItems": 1, "items": {"enum": list(d.allowed)}}
    ]
    numbers = sorted(
        {a for a in d.allowed if isinstance(a, int | float) and not isinstance(a, bool)}
    )
    if numbers:
        forms.append(
            {
                "type": "object",
                "properties": {"min": {"type": "number"}, "max": {"type": "number"}},
                "additionalProperties": False,
                "minProperties": 1,
                "anyOf": [
                    {"properties": {"min": {"maximum": a}, "max": {"minimum": a}}} for a in numbers
                ],
            }
        )
    return {"oneOf": forms, "default": list(d.default)}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(float(a), float(b), abs_tol=1e-9)
    return bool(a == b)
