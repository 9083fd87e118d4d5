"""A worker's own exception out of Ray's wrapper: its type (to sort whose fault it is) and its
text (what the trial records)."""

from __future__ import annotations

import traceback


def worker_cause(e: BaseException) -> BaseException:
    """The exception the worker raised (Ray wraps it in a RayTaskError with ``cause``)."""
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, BaseException) else e


def error_message(e: BaseException) -> str:
    """The worker's own exception, not Ray's wrapper text."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException):
        tb = "".join(traceback.format_exception_only(type(cause), cause)).strip()
        return tb
    return f"{type(e).__name__}: {e}"
