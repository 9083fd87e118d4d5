"""Registry of search spaces by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from search_spaces._errors import DuplicateSpaceError, UnknownSpaceError
from search_spaces._space import SearchSpace

S = TypeVar("S", bound=type[SearchSpace])

_SPACES: dict[str, type[SearchSpace]] = {}
_PER_UPLOAD: set[str] = set()


def register_space(name: str, *, per_upload: bool = False) -> Callable[[S], S]:
    """Class decorator that registers a space under ``name``.

    ``per_upload``: the space is made for one uploaded network (its dimensions come from the
    upload's description), not from a task's input shape and classes alone.
    """

    def decorator(cls: S) -> S:
        if name in _SPACES:
            raise DuplicateSpaceError(f"{name!r} already registered by {_SPACES[name].__module__}")
        cls.name = name
        _SPACES[name] = cls
        if per_upload:
            _PER_UPLOAD.add(name)
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


def list_spaces(*, uploads: bool = False) -> list[str]:
    """The spaces built from a task alone; with ``uploads``, also those made per uploaded
    network (``network``)."""
    return sorted(n for n in _SPACES if uploads or n not in _PER_UPLOAD)
