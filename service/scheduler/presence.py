"""A scheduler says it is alive: its row in ``hwnas_schedulers`` is refreshed every few seconds
(with whether its Ray answers and which job it runs), so ``/readyz`` can tell an API with no
live scheduler, or one whose Ray is gone, from a ready service."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

from sqlalchemy import delete, update

from service.db.models import SchedulerPresence, utcnow
from service.db.session import get_sessionmaker

log = logging.getLogger(__name__)
EVERY_S = 5.0


class Presence:
    """Refreshes ``worker_id``'s row every :data:`EVERY_S` seconds until :meth:`stop`."""

    def __init__(
        self,
        url: str,
        worker_id: str,
        health: Callable[[], tuple[bool, str]],
        job: Callable[[], int | None],
    ) -> None:
        self.url, self.worker_id, self.health, self.job = url, worker_id, health, job
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="presence", daemon=True)
        self.beat()
        self._thread.start()

    def beat(self) -> None:
        ok, detail = self.health()
        values = {"seen_at": utcnow(), "ray_ok": ok, "ray_detail": detail, "job_id": self.job()}
        with get_sessionmaker(self.url)() as s:
            result = s.execute(
                update(SchedulerPresence)
                .where(SchedulerPresence.worker_id == self.worker_id)
                .values(**values)
            )
            if not getattr(result, "rowcount", 0):
                s.add(
                    SchedulerPresence(
                        worker_id=self.worker_id,
                        host=socket.gethostname(),
                        pid=os.getpid(),
                        **values,
                    )
                )
            s.commit()

    def _run(self) -> None:
        while not self._stop.wait(EVERY_S):
            try:
                self.beat()
            except Exception:  # the database away: try again next time
                log.exception("scheduler %s: presence not recorded", self.worker_id)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        try:
            with get_sessionmaker(self.url)() as s:
                s.execute(
                    delete(SchedulerPresence).where(SchedulerPresence.worker_id == self.worker_id)
                )
                s.commit()
        except Exception:  # noqa: BLE001 - an exiting scheduler; /readyz ages the row out
            log.warning("scheduler %s: presence row left behind", self.worker_id)
