"""Load and list hardware profiles (TOML files under this package, or HWNAS_PROFILE_DIR).

A file in ``HWNAS_PROFILE_DIR`` that does not parse or validate is skipped with a logged
warning naming the file and the problem (one bad file must not take every profile down); a
built-in profile that fails is a bug and raises.

``HWNAS_RPC_TRACKER=host:port`` points the built-in RPC profiles (``arm/*``) at your TVM RPC
tracker instead of ``127.0.0.1:9190``; profiles from ``HWNAS_PROFILE_DIR`` keep their own.
"""

from __future__ import annotations

import logging
import os
import tomllib
from functools import cache
from pathlib import Path

from pydantic import ValidationError

from hw_profiles._schema import Profile, check_address
from search_spaces import HwnasError

log = logging.getLogger(__name__)
_BUILTIN = Path(__file__).resolve().parent
RPC_TRACKER_ENV = "HWNAS_RPC_TRACKER"


class ProfileError(HwnasError, ValueError):
    """A profile file that does not parse or validate."""


class UnknownProfileError(HwnasError, KeyError):
    """A profile name with no file."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def profile_dirs() -> list[Path]:
    """Built-in profiles, then any directories in ``HWNAS_PROFILE_DIR`` (os.pathsep separated)."""
    extra = [Path(p) for p in os.environ.get("HWNAS_PROFILE_DIR", "").split(os.pathsep) if p]
    return [_BUILTIN, *extra]


def _tracker_override() -> str | None:
    value = os.environ.get(RPC_TRACKER_ENV, "").strip()
    if not value:
        return None
    try:
        return check_address(value)
    except ValueError as e:
        raise ProfileError(f"{RPC_TRACKER_ENV}: {e}") from None


def load_profile_file(path: Path) -> Profile:
    """Parse and validate one TOML profile file.

    Raises:
        ProfileError: the file is not valid TOML or does not match the schema.
    """
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ProfileError(f"{path}: {e}") from e
    try:
        profile = Profile.model_validate(data)
    except ValidationError as e:
        raise ProfileError(f"{path}: {e}") from e
    return profile


@cache
def _all_profiles(dirs: tuple[Path, ...], tracker: str | None) -> dict[str, Profile]:
    found: dict[str, Profile] = {}
    for d in dirs:
        for path in sorted(d.rglob("*.toml")):
            try:
                profile = load_profile_file(path)
                expected = path.relative_to(d).with_suffix("").as_posix()
                if profile.name != expected:
                    raise ProfileError(
                        f"{path}: name {profile.name!r} must match its path {expected!r}"
                    )
            except ProfileError as e:
                if d == _BUILTIN:
                    raise
                log.warning("hardware profile skipped: %s", e)
                continue
            if tracker and d == _BUILTIN and profile.measure.tracker:
                measure = profile.measure.model_copy(update={"tracker": tracker})
                profile = profile.model_copy(update={"measure": measure})
            found[profile.name] = profile
    return found


def _profiles() -> dict[str, Profile]:
    return _all_profiles(tuple(profile_dirs()), _tracker_override())


def list_profiles() -> list[Profile]:
    """Every profile, sorted by name (a later directory's profile replaces an earlier one)."""
    return [p for _, p in sorted(_profiles().items())]


def get_profile(name: str) -> Profile:
    """The profile called ``name`` (e.g. ``x86/local``).

    Raises:
        UnknownProfileError: no such profile.
    """
    profiles = _profiles()
    try:
        return profiles[name]
    except KeyError:
        raise UnknownProfileError(
            f"unknown hardware profile {name!r}; known: {sorted(profiles)}"
        ) from None
