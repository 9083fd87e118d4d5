"""Registry of search spaces by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from search_spaces._errors import DuplicateSpaceError, UnknownSpaceError
from search_spaces._space import SearchSpace

S = TypeVar("S", bound=type[SearchSpace])

_SPACES: dict[str, type[SearchSpace]] = {}


def register_space(name: str) -> Callable[[S], S]:
    """Class decorator that registers a space under ``name``."""

    def decorator(cls: S) -> S:
        if name in _SPACES:
            raise DuplicateSpaceError(f"{name!r} already registered by {_SPACES[name].__module__}")
        cls.name = name
        _SPACES[name] = cls
        return cls

    return decorator


def get_space(name: str) -> type[SearchSpace]:
    """The space class registered as ``name``.

    Raises:
        UnknownSpaceError: no space has that name.
    """
    try:
        return _SPACES[name]
    except KeyError:
        raise UnknownSpaceError(
            f"unknown search space {name!r}; known: {sorted(_SPACES)}"
        ) from None


def list_spaces() -> list[str]:
    return sorted(_SPACES)
