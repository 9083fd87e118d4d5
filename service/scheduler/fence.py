"""Lease fencing: a scheduler writes a job's rows and study only while it holds the job's claim.

A claim carries a generation (``hwnas_jobs.lease``, one more per claim). Every write the
controller makes goes through :meth:`Fence.session`: a transaction that first locks the job's
row *if* it still carries our worker id and generation (``SELECT ... FOR UPDATE``), and raises
:class:`LeaseLost` otherwise. On PostgreSQL the lock is held until the block commits, so a
claim by another scheduler (which skips locked rows) cannot slip between the check and the
writes, including the Optuna writes made inside the block on Optuna's own connection. On
SQLite (one host) the check and the writes are one short block: a claim can only interleave
between the check and the first write.

Inside one block the study's writes come before the rows' (on SQLite our first write takes the
database's write lock until the block commits, and an Optuna write after it would wait for it).

A scheduler that stalled (SIGSTOP, a long pause) past the heartbeat timeout thus finds the
lease gone at its first write after waking, stops without writing and cancels its Ray tasks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import Job


class LeaseLost(RuntimeError):
    """The job's claim is no longer ours: another scheduler holds it, or it was released."""


class Fence:
    def __init__(self, sessions: Any, job_id: int, worker_id: str, lease: int | None) -> None:
        self.sessions = sessions
        self.job_id, self.worker_id = job_id, worker_id
        self.lease = lease if lease is not None else self._adopt()
        self._open: Session | None = None

    def _adopt(self) -> int:
        """The current generation of a claim made without one in hand (tests, tools)."""
        with self.sessions() as s:
            row = s.execute(
                select(Job.lease, Job.worker_id).where(Job.id == self.job_id)
            ).one_or_none()
        if row is None or row.worker_id != self.worker_id:
            raise LeaseLost(f"job {self.job_id} is not claimed by {self.worker_id}")
        return int(row.lease)

    def hold(self, s: Session) -> None:
        """Lock the job's row in ``s``'s transaction if we hold its lease; else LeaseLost."""
        got = s.execute(
            select(Job.id)
            .where(
                Job.id == self.job_id,
                Job.worker_id == self.worker_id,
                Job.lease == self.lease,
            )
            .with_for_update()
        ).scalar_one_or_none()
        if got is None:
            raise LeaseLost(
                f"job {self.job_id}: lease {self.lease} of {self.worker_id} is gone "
                "(another scheduler claimed the job, or it was released)"
            )

    def check(self) -> None:
        """Raise LeaseLost unless we still hold the lease (a read; nothing is locked after)."""
        with self.session():
            pass

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction holds the fence; nested uses share it and the outermost
        commits. Everything written to the job's rows or study belongs inside one."""
        if self._open is not None:
            yield self._open
            return
        with self.sessions() as s:
            self.hold(s)
            self._open = s
            try:
                yield s
                s.commit()
            finally:
                self._open = None
