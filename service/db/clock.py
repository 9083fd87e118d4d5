"""The database server's clock, as SQL: leases are judged by one clock, never a host's.

Two schedulers on hosts whose clocks disagree (or one that slept through a stall) would judge a
heartbeat's age differently; ``now()`` evaluated by the database is the same for both.
SQLite (one host) gets the same text format SQLAlchemy stores its timestamps in
(``YYYY-MM-DD HH:MM:SS.ffffff``), so comparisons with stored values stay textual and correct.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement

from service.db.base import UTCDateTime


class db_now(FunctionElement[Any]):  # noqa: N801 - SQL function style
    """The database server's current UTC time."""

    type = UTCDateTime()
    inherit_cache = True


class db_now_minus(FunctionElement[Any]):  # noqa: N801
    """The database server's current UTC time less ``seconds`` (a literal number)."""

    type = UTCDateTime()
    inherit_cache = False

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)
        super().__init__()


_SQLITE_NOW = (
    "strftime('%Y-%m-%d %H:%M:%S', 'now'{shift})"
    " || substr(strftime('%f', 'now'{shift}), 3) || '000'"
)


@compiles(db_now)
def _now_default(element: db_now, compiler: Any, **kw: Any) -> str:
    return "CURRENT_TIMESTAMP"


@compiles(db_now, "postgresql")
def _now_pg(element: db_now, compiler: Any, **kw: Any) -> str:
    return "now()"


@compiles(db_now, "sqlite")
def _now_sqlite(element: db_now, compiler: Any, **kw: Any) -> str:
    return _SQLITE_NOW.format(shift="")


@compiles(db_now_minus, "postgresql")
def _minus_pg(element: db_now_minus, compiler: Any, **kw: Any) -> str:
    return f"(now() - make_interval(secs => {element.seconds!r}))"


@compiles(db_now_minus, "sqlite")
def _minus_sqlite(element: db_now_minus, compiler: Any, **kw: Any) -> str:
    return _SQLITE_NOW.format(shift=f", '-{element.seconds!r} seconds'")
