"""Errors raised by the search-space layer."""

from __future__ import annotations


class HwnasError(Exception):
    """Root of every error hwnas raises on purpose."""


class UnknownSpaceError(HwnasError, KeyError):
    """A search space name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateSpaceError(HwnasError, ValueError):
    """Two spaces registered under one name."""


class SchemaVersionError(HwnasError, ValueError):
    """A serialized object written by an incompatible schema version."""
