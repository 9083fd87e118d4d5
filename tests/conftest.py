"""Shared fixtures: a fresh service database per test on SQLite and on PostgreSQL; ``gpu``-marked
tests skip on hosts without a CUDA GPU."""

from __future__ import annotations

import glob
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from service.db.migrate import upgrade
from service.db.session import get_engine, get_sessionmaker


def _has_cuda_gpu() -> bool:
    """NVIDIA device files and ``nvidia-smi`` (no torch/tvm import at collection)."""
    return bool(glob.glob("/dev/nvidia[0-9]*")) and shutil.which("nvidia-smi") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _has_cuda_gpu():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: no /dev/nvidia* + nvidia-smi on this host")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _pg_base_url() -> str | None:
    url = os.environ.get("HWNAS_TEST_PG")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI must test PostgreSQL: set HWNAS_TEST_PG (.ci/run starts one)")
        pytest.skip("HWNAS_TEST_PG is unset: PostgreSQL tests skipped outside CI")
    return url


def _fresh_pg_database(base: str) -> Iterator[str]:
    """A new, empty PostgreSQL database for one test, dropped afterwards."""
    name = f"hwnas_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(make_url(base).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        get_engine(url).dispose()
        get_engine.cache_clear()
        get_sessionmaker.cache_clear()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of an empty database at the service's migration head (SQLite file or PostgreSQL)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'hwnas.db'}"
        upgrade(url)
        yield url
        get_engine(url).dispose()
        return
    base = _pg_base_url()
    assert base is not None
    for url in _fresh_pg_database(base):
        upgrade(url)
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def blank_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of an empty database, no migration applied (SQLite file or PostgreSQL)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'blank.db'}"
        yield url
        get_engine(url).dispose()
        return
    base = _pg_base_url()
    assert base is not None
    yield from _fresh_pg_database(base)
