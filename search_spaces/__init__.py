"""Candidates and search spaces (pure Python + pydantic: no torch, tvm, ray or sqlalchemy)."""

from search_spaces import _small  # noqa: F401  (registers the built-in spaces)
from search_spaces._candidate import SCHEMA_VERSION, WEIGHT_BITS, Candidate, LayerChoice
from search_spaces._errors import (
    DuplicateSpaceError,
    HwnasError,
    SchemaVersionError,
    UnknownSpaceError,
)
from search_spaces._registry import get_space, list_spaces, register_space
from search_spaces._space import Dimension, SearchSpace, SpaceContext, TrialLike

__all__ = [
    "SCHEMA_VERSION",
    "WEIGHT_BITS",
    "Candidate",
    "Dimension",
    "DuplicateSpaceError",
    "HwnasError",
    "LayerChoice",
    "SchemaVersionError",
    "SearchSpace",
    "SpaceContext",
    "TrialLike",
    "UnknownSpaceError",
    "get_space",
    "list_spaces",
    "register_space",
]
