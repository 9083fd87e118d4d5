"""Candidates and search spaces (pure Python + pydantic: no torch, tvm, ray or sqlalchemy)."""

from search_spaces import _joint, _network, _small  # noqa: F401  (register the spaces)
from search_spaces._candidate import (
    ACT_BITS,
    DIGEST,
    FAMILIES,
    FORMAT_BITS,
    INT_CODED,
    NETWORK_NAME,
    SCHEMA_VERSION,
    WEIGHT_BITS,
    Candidate,
    Compression,
    Distill,
    GroupCompression,
    NetworkRef,
    Stage,
    default_format,
)
from search_spaces._errors import (
    DuplicateSpaceError,
    HwnasError,
    SchemaVersionError,
    UnknownSpaceError,
)
from search_spaces._genes import genes, sample_flat
from search_spaces._network import (
    GROUP_DIMENSIONS,
    MAX_GROUPS,
    LayerGroup,
    NetworkDescription,
    NetworkSpace,
    Normalization,
)
from search_spaces._registry import get_space, list_spaces, register_space
from search_spaces._space import MAX_CLASSES, Dimension, SearchSpace, SpaceContext, TrialLike

__all__ = [
    "GROUP_DIMENSIONS",
    "DIGEST",
    "NETWORK_NAME",
    "MAX_GROUPS",
    "GroupCompression",
    "LayerGroup",
    "NetworkDescription",
    "NetworkRef",
    "NetworkSpace",
    "Normalization",
    "MAX_CLASSES",
    "SCHEMA_VERSION",
    "WEIGHT_BITS",
    "Candidate",
    "Dimension",
    "DuplicateSpaceError",
    "HwnasError",
    "ACT_BITS",
    "Compression",
    "Distill",
    "FORMAT_BITS",
    "INT_CODED",
    "default_format",
    "FAMILIES",
    "Stage",
    "SchemaVersionError",
    "SearchSpace",
    "SpaceContext",
    "TrialLike",
    "UnknownSpaceError",
    "genes",
    "get_space",
    "sample_flat",
    "list_spaces",
    "register_space",
]
