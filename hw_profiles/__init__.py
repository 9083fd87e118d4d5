"""Hardware profiles: TOML data validated by a pydantic schema (no torch/tvm imports here)."""

from hw_profiles import isa
from hw_profiles._loader import (
    RPC_TRACKER_ENV,
    ProfileError,
    UnknownProfileError,
    get_profile,
    list_profiles,
    load_profile_file,
    profile_dirs,
)
from hw_profiles._schema import PROFILE_SCHEMA_VERSION, Int8Dot, Measure, Profile, Supports

__all__ = [
    "PROFILE_SCHEMA_VERSION",
    "Int8Dot",
    "RPC_TRACKER_ENV",
    "Measure",
    "Profile",
    "ProfileError",
    "Supports",
    "UnknownProfileError",
    "get_profile",
    "isa",
    "list_profiles",
    "load_profile_file",
    "profile_dirs",
]
