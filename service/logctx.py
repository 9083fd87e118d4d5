"""Job and trial ids on every log line a scheduler writes about them.

The controller binds the job it runs and the trial it handles (:func:`bound`); a filter on the
log handlers (:func:`install`) puts them on each record, and the format prints them:
``... service.scheduler.controller [job 12 trial 5]: trial 5 failed (error): ...``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar

_job: ContextVar[str] = ContextVar("hwnas_log_job", default="-")
_trial: ContextVar[str] = ContextVar("hwnas_log_trial", default="-")
FORMAT = "%(asctime)s %(levelname)s %(name)s [job %(job)s trial %(trial)s]: %(message)s"


@contextlib.contextmanager
def bound(*, job: int | None = None, trial: int | None = None) -> Iterator[None]:
    """Log lines written in the block carry ``job`` / ``trial`` (those given)."""
    tokens = []
    if job is not None:
        tokens.append((_job, _job.set(str(job))))
    if trial is not None:
        tokens.append((_trial, _trial.set(str(trial))))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.job = _job.get()
        record.trial = _trial.get()
        return True


def install(level: int) -> None:
    """Root logging at ``level`` with job and trial ids in every line."""
    logging.basicConfig(level=level, format=FORMAT)
    for handler in logging.getLogger().handlers:
        handler.addFilter(ContextFilter())
