"""hwnas gc: what no job needs goes (deleted jobs' files and studies, stale temporaries, caches
by age and size), what jobs need stays; a full disk fails an upload cleanly."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import pytest

from service.db import accounts
from service.db.models import Job
from service.db.session import get_sessionmaker
from service.retention import collect
from service.scheduler.study import get_storage, open_study
from service.schemas import JobSpec
from service.settings import Settings
from tests.service.api import admin_client, api_settings

SPEC = {
    "dataset": "digits",
    "space": "mlp_small",
    "profiles": ["x86/local"],
    "budget": {"trials": 1},
}
DAY = 86_400.0


def _file(path: Path, size: int, age_s: float, now: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (now - age_s, now - age_s))
    return path


def test_gc_keeps_what_jobs_need_and_removes_the_rest(db_url: str, tmp_path: Path) -> None:
    settings = Settings(
        database_url=db_url,
        artifact_dir=tmp_path / "art",
        probe_cache_dir=tmp_path / "probe-cache",
        cache_max_age_days=30,
        cache_max_bytes=2500,
    )
    with get_sessionmaker(db_url)() as s:
        job = Job(spec=SPEC, owner_id=accounts.admin_user(session=s).id)
        s.add(job)
        s.commit()
        live = job.id
    get_storage(db_url)
    open_study(db_url, live, JobSpec.model_validate(SPEC))
    open_study(db_url, live + 100, JobSpec.model_validate(SPEC))  # a deleted job's study
    now = time.time()
    art = Path(settings.artifact_dir)
    kept = [
        _file(settings.job_dir(live) / "trial-00000" / "model.onnx", 100, 40 * DAY, now),
        _file(art / "parents" / "recent.safetensors", 1000, 1 * DAY, now),
        _file(tmp_path / "probe-cache" / "ab" / "recent.json", 1000, 2 * DAY, now),
        _file(art / "jobs" / str(live) / ".x.123.tmp", 10, 60, now),  # a writer still at it
        _file(art / "tuning" / "x86" / "database_tuning_record.json", 10, 90 * DAY, now),
    ]
    gone = [
        _file(settings.job_dir(live + 100) / "trial-00000" / "model.onnx", 100, 1 * DAY, now),
        _file(art / "parents" / "stale.safetensors", 10, 31 * DAY, now),  # unused 31 days
        _file(art / "parents" / "lru.safetensors", 1000, 3 * DAY, now),  # over the size cap
        _file(art / "parents" / "p.tmp4242", 10, 2 * 3600, now),
        _file(tmp_path / "probe-cache" / "ab" / "k.4242.tmp", 10, 2 * 3600, now),
    ]
    staging = art / "datasets" / "1" / ".staging-abc"
    _file(staging / "toy.npz", 10, 2 * 3600, now)
    os.utime(staging, (now - 7200, now - 7200))

    dry = collect(settings, dry_run=True, now=now)
    assert all(p.exists() for p in gone) and dry.removed_studies == 1
    report = collect(settings, now=now)
    assert [p for p in gone if p.exists()] == [] and not staging.exists()
    assert all(p.exists() for p in kept)
    assert report.removed_studies == 1 and report.removed_files == dry.removed_files
    assert report.kept_cache_bytes == 2000
    names = {s.study_name for s in get_storage(db_url).get_all_studies()}
    assert names == {f"job-{live}"}


def test_a_full_disk_fails_an_upload_with_507_and_leaves_nothing(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    import numpy as np

    import workers.data._stored as stored

    def full(*_: object, **__: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    buf = io.BytesIO()
    np.savez(
        buf,
        x_train=np.zeros((20, 4), np.float32),
        y_train=np.arange(20) % 2,
        x_test=np.zeros((20, 4), np.float32),
        y_test=np.arange(20) % 2,
    )
    monkeypatch.setattr(stored.np, "save", full)  # the store's write hits a full disk
    settings = api_settings(db_url, tmp_path)
    with admin_client(settings) as c:
        r = c.post("/v1/datasets", params={"name": "big"}, content=buf.getvalue())
        assert r.status_code == 507 and "disk is full" in r.json()["detail"]
        assert "user/big" not in json.dumps(c.get("/v1/datasets").json())
    assert [p for p in settings.user_data_dir.rglob("*") if p.is_file()] == []
