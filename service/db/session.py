"""Engine and session factory; migrations are applied by :func:`service.db.migrate.upgrade`."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


# Up to as many connections as the API has threads for sync routes (anyio's default: 40), so
# a burst of requests waits for a thread, never for a connection (measured: 1,000 concurrent
# reads timed out on the default pool of 5 + 10); only 10 are kept open when idle.
POOL = {"pool_size": 10, "max_overflow": 30, "pool_timeout": 30}
CONNECT_TIMEOUT_S = 10
STATEMENT_TIMEOUT_S = 120
LOCK_TIMEOUT_S = 60
IDLE_TX_TIMEOUT_S = 600


@cache
def get_engine(url: str) -> Engine:
    """One engine per URL per process. SQLite files get WAL + a busy timeout."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(
                url, connect_args={"check_same_thread": False, "timeout": 30}, **POOL
            )
        else:
            engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, connect_args=pg_timeouts(url), **POOL)


def pg_timeouts(url: str) -> dict[str, Any]:
    """Connect and statement timeouts for a PostgreSQL URL (none for other backends): a server
    that stopped answering fails a call in bounded time instead of hanging the scheduler."""
    if not url.startswith("postgresql"):
        return {}
    return {
        "connect_timeout": CONNECT_TIMEOUT_S,
        "options": f"-c statement_timeout={STATEMENT_TIMEOUT_S * 1000} "
        f"-c lock_timeout={LOCK_TIMEOUT_S * 1000} "
        f"-c idle_in_transaction_session_timeout={IDLE_TX_TIMEOUT_S * 1000}",
    }


@cache
def get_sessionmaker(url: str) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


def session_scope(url: str) -> Iterator[Session]:
    with get_sessionmaker(url)() as session:
        yield session
