"""Retention: what no job needs any more goes, so the artifact store does not grow without bound.

``hwnas gc`` (and, with ``HWNAS_GC_INTERVAL_S``, the scheduler every so often) removes

- the artifacts and Optuna study of jobs that were deleted (a directory ``jobs/<id>`` or a study
  ``job-<id>`` without a job row);
- trained parents and probe measurements not used for ``cache_max_age_days``, then the least
  recently used beyond ``cache_max_bytes`` in all (they are caches: a later job rebuilds what
  it needs);
- temporary files and staging directories older than an hour (a writer that died left them).

Tuning databases are kept: their records are expensive to rebuild and small.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from service.db.models import Job
from service.db.session import get_sessionmaker
from service.settings import Settings

log = logging.getLogger(__name__)
TEMP = re.compile(r"(\.tmp\d*(\.\w+)?$|^\.staging-|^\.[^.]+\.\d+\.npz$)")
TEMP_AGE_S = 3600.0
_STUDY = re.compile(r"^job-(\d+)$")


@dataclass
class GcReport:
    removed_files: int = 0
    removed_bytes: int = 0
    removed_studies: int = 0
    kept_cache_bytes: int = 0
    paths: list[str] = field(default_factory=list)

    def add(self, path: Path, size: int) -> None:
        self.removed_files += 1
        self.removed_bytes += size
        if len(self.paths) < 1000:
            self.paths.append(str(path))


def forget_job_files(settings: Settings, job_id: int) -> None:
    """A deleted job's own artifacts and Optuna study (what gc would find orphaned later)."""
    from service.scheduler.study import delete_study

    shutil.rmtree(settings.job_dir(job_id), ignore_errors=True)
    delete_study(settings.database_url, job_id)


def collect(settings: Settings, *, dry_run: bool = False, now: float | None = None) -> GcReport:
    """One garbage collection (see the module docstring); ``dry_run`` only reports."""
    now = time.time() if now is None else now
    report = GcReport()
    root = Path(settings.artifact_dir).resolve()
    with get_sessionmaker(settings.database_url)() as s:
        jobs = set(s.scalars(select(Job.id)).all())
    for d in sorted((root / "jobs").glob("*")) if (root / "jobs").is_dir() else []:
        if d.is_dir() and d.name.isdigit() and int(d.name) not in jobs:
            for f, size in _files(d):
                report.add(f, size)
            if not dry_run:
                shutil.rmtree(d, ignore_errors=True)
    report.removed_studies = _orphan_studies(settings, jobs, dry_run)
    caches = [root / "parents", Path(settings.probe_cache_dir).resolve()]
    entries = sorted(_cache_entries(caches), key=lambda e: e[2])
    max_age_s = settings.cache_max_age_days * 86_400
    total = sum(size for _, size, _ in entries)
    for f, size, used in entries:  # oldest use first
        if now - used > max_age_s or total > settings.cache_max_bytes:
            report.add(f, size)
            total -= size
            if not dry_run:
                f.unlink(missing_ok=True)
    report.kept_cache_bytes = total
    for top in (root, Path(settings.probe_cache_dir).resolve()):
        for f, size in _temps(top, now):
            report.add(f, size)
            if not dry_run:
                shutil.rmtree(f, ignore_errors=True) if f.is_dir() else f.unlink(missing_ok=True)
    log.info(
        "gc%s: %d files (%d bytes), %d studies removed; caches keep %d bytes",
        " (dry run)" if dry_run else "",
        report.removed_files,
        report.removed_bytes,
        report.removed_studies,
        report.kept_cache_bytes,
    )
    return report


def _cache_entries(caches: list[Path]) -> Iterator[tuple[Path, int, float]]:
    """(path, bytes, last use) of every cache entry; readers touch an entry on a hit, so its
    mtime is its last use (atime is often not kept)."""
    for c in caches:
        for f, size in _files(c):
            st = _stat(f)
            if st is not None and not TEMP.search(f.name) and not f.name.endswith(".lock"):
                yield f, size, max(st.st_mtime, st.st_atime)


def _stat(f: Path) -> os.stat_result | None:
    try:
        return f.stat()
    except OSError:
        return None


def _files(top: Path) -> Iterator[tuple[Path, int]]:
    for dirpath, _, names in os.walk(top):
        for n in names:
            p = Path(dirpath) / n
            st = _stat(p)
            if st is not None:
                yield p, st.st_size


def _temps(top: Path, now: float) -> Iterator[tuple[Path, int]]:
    """Temporary files and staging directories older than an hour under ``top``."""
    for dirpath, dirs, names in os.walk(top):
        for n in [*dirs, *names]:
            p = Path(dirpath) / n
            st = _stat(p)
            if TEMP.search(n) and st is not None and now - st.st_mtime > TEMP_AGE_S:
                yield p, st.st_size if p.is_file() else sum(s for _, s in _files(p))
        dirs[:] = [d for d in dirs if not TEMP.search(d)]


def _orphan_studies(settings: Settings, jobs: set[int], dry_run: bool) -> int:
    from service.scheduler.study import delete_study, get_storage

    orphans = [
        int(m[1])
        for s in get_storage(settings.database_url).get_all_studies()
        if (m := _STUDY.match(s.study_name)) and int(m[1]) not in jobs
    ]
    if not dry_run:
        for job_id in orphans:
            delete_study(settings.database_url, job_id)
    return len(orphans)
