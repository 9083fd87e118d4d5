"""Job and upload lifecycle over the API (SQLite and PostgreSQL): filters and the page envelope,
DELETE of a job and of an upload, stage progress and ETA, the event stream, /metrics, /readyz."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.db import queue
from service.db.models import Job, SchedulerPresence, Trial, TrialState, utcnow
from service.db.session import get_sessionmaker
from service.scheduler.fence import Fence
from service.scheduler.records import TrialRecords
from service.scheduler.study import open_study
from service.schemas import JobSpec
from service.settings import Settings
from tests.service.api import admin_client, api_settings, as_token, new_user
from workers import progress

DEMO = json.loads((Path(__file__).resolve().parents[2] / "examples" / "demo-job.json").read_text())


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return api_settings(db_url, tmp_path)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with admin_client(settings) as c:
        yield c


def _submit(client: TestClient, name: str, **kw: Any) -> dict[str, Any]:
    r = client.post("/v1/jobs", json={**DEMO, "name": name}, **kw)
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_filters_and_the_page_envelope(client: TestClient) -> None:
    ids = [_submit(client, n)["id"] for n in ("alpha-1", "alpha-2", "beta", "Alpha_3")]
    client.post(f"/v1/jobs/{ids[1]}/cancel")
    _, token = new_user(client, "pat")
    _submit(client, "alpha-pat", headers=as_token(client, token))
    page = client.get("/v1/jobs", params={"limit": 2}).json()
    assert (page["count"], page["skip"], page["limit"], page["next_skip"]) == (5, 0, 2, 2)
    last = client.get("/v1/jobs", params={"limit": 2, "skip": 4}).json()
    assert len(last["data"]) == 1 and last["next_skip"] is None
    names = [j["name"] for j in client.get("/v1/jobs", params={"name": "ALPHA"}).json()["data"]]
    assert names == ["alpha-pat", "Alpha_3", "alpha-2", "alpha-1"]  # case-insensitive, newest first
    literal = client.get("/v1/jobs", params={"name": "a_3"}).json()["data"]  # "_" is no wildcard
    assert [j["name"] for j in literal] == ["Alpha_3"]
    cancelled = client.get("/v1/jobs", params={"status": "cancelled"}).json()
    assert [j["id"] for j in cancelled["data"]] == [ids[1]]
    both = client.get("/v1/jobs", params={"status": ["cancelled", "queued"]}).json()
    assert both["count"] == 5
    mine = client.get("/v1/jobs", params={"owner": "pat"}).json()
    assert [j["name"] for j in mine["data"]] == ["alpha-pat"]
    assert (
        client.get(
            "/v1/jobs", params={"owner": "admin"}, headers=as_token(client, token)
        ).status_code
        == 403
    )


def test_delete_an_ended_job_and_what_goes_with_it(
    client: TestClient, settings: Settings, db_url: str
) -> None:
    job = _submit(client, "to-delete")
    jid = job["id"]
    r = client.delete(f"/v1/jobs/{jid}")
    assert r.status_code == 409 and "cancel it" in r.json()["detail"]
    open_study(db_url, jid, JobSpec.model_validate(job["spec"]))  # a study, as a run leaves
    bundle = settings.job_dir(jid) / "trial-00000"
    bundle.mkdir(parents=True)
    (bundle / "model.onnx").write_bytes(b"x" * 10)
    shared = Path(settings.artifact_dir).resolve() / "parents" / "p.safetensors"
    shared.parent.mkdir(parents=True)
    shared.write_bytes(b"parent")
    with get_sessionmaker(db_url)() as s:
        s.add(
            Trial(job_id=jid, number=0, candidate={}, candidate_hash="h", state=TrialState.failed)
        )
        s.commit()
    client.post(f"/v1/jobs/{jid}/cancel")
    waiting = _submit(client, "warm")  # a queued job warm-starting from it holds it
    with get_sessionmaker(db_url)() as s:
        row = s.get(Job, waiting["id"])
        assert row is not None
        row.spec = {**row.spec, "warm_start_from": jid}
        s.commit()
    assert client.delete(f"/v1/jobs/{jid}").status_code == 409
    client.post(f"/v1/jobs/{waiting['id']}/cancel")
    assert client.delete(f"/v1/jobs/{jid}").status_code == 204
    assert client.get(f"/v1/jobs/{jid}").status_code == 404
    assert client.delete(f"/v1/jobs/{jid}").status_code == 404
    assert not settings.job_dir(jid).exists() and shared.read_bytes() == b"parent"
    with get_sessionmaker(db_url)() as s:
        assert s.query(Trial).filter(Trial.job_id == jid).count() == 0
    from service.scheduler.study import load_study

    with pytest.raises(KeyError):
        load_study(db_url, jid)
    (event,) = client.get("/v1/audit", params={"action": "job.delete"}).json()["data"]
    assert event["target"] == f"job {jid}" and event["detail"]["name"] == "to-delete"


def _npz() -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez(
        buf,
        x_train=rng.integers(0, 256, (60, 1, 8, 8), dtype=np.uint8),
        y_train=np.arange(60) % 3,
        x_test=rng.integers(0, 256, (20, 1, 8, 8), dtype=np.uint8),
        y_test=np.arange(20) % 3,
    )
    return buf.getvalue()


def test_delete_an_upload_unless_an_active_job_uses_it(
    client: TestClient, settings: Settings
) -> None:
    assert client.post("/v1/datasets", params={"name": "toy"}, content=_npz()).status_code == 201
    admin_id = client.get("/v1/me").json()["id"]
    stored = [p.name for p in settings.datasets_dir(admin_id).rglob("*")]
    assert "toy.json" in stored and "x_train.npy" in stored
    spec = {**DEMO, "dataset": "user/toy", "space": "cnn_joint", "space_overrides": {}}
    job = client.post("/v1/jobs", json=spec).json()
    r = client.delete("/v1/datasets/toy")
    assert r.status_code == 409 and str(job["id"]) in r.json()["detail"]
    client.post(f"/v1/jobs/{job['id']}/cancel")
    assert client.delete("/v1/datasets/toy").status_code == 204
    left = [p for p in settings.datasets_dir(admin_id).rglob("*") if "toy" in p.name]
    assert left == []  # its arrays (toy/*.npy) and description (toy.json) are gone
    assert "user/toy" not in [d["name"] for d in client.get("/v1/datasets").json()["data"]]
    assert client.delete("/v1/datasets/toy").status_code == 404


def _running(db_url: str, job_id: int, numbers: list[int]) -> None:
    """A scheduler's view: the job claimed, trials dispatched."""
    with get_sessionmaker(db_url)() as s:
        assert queue.claim_job(session=s, worker_id="w", stale_after_s=60) is not None
        for n in numbers:
            s.add(Trial(job_id=job_id, number=n, candidate={}, candidate_hash=f"h{n}"))
        s.commit()


def test_running_trials_show_their_stage_and_the_job_an_eta(
    client: TestClient, settings: Settings, db_url: str
) -> None:
    job = _submit(client, "live")
    jid = job["id"]
    _running(db_url, jid, [0, 1, 2])
    with progress.reporting(settings.progress_file(jid, 1)):
        progress.report("training parent epoch", 3, 6)
    with progress.reporting(settings.progress_file(jid, 2)):
        progress.report("tuning tasks", 4, 18, detail="x86/local")
    records = TrialRecords(Fence(get_sessionmaker(db_url), jid, "w", None), jid)
    with get_sessionmaker(db_url)() as s:
        row = s.query(Trial).filter_by(job_id=jid, number=0).one()
        row.started_at = utcnow() - timedelta(seconds=60)
        s.commit()
    records.update(0, TrialState.complete, metrics={"accuracy": 0.5}, timings={"runs": []})
    p = client.get(f"/v1/jobs/{jid}").json()["progress"]
    stages = {t["trial"]: t["text"] for t in p["trials_running"]}
    assert stages == {1: "training parent epoch 3/6", 2: "tuning tasks 4/18 (x86/local)"}
    # one trial in ~60 s: the others left take ~60 s each
    left = DEMO["budget"]["trials"] - 1
    assert p["eta_s"] == pytest.approx(left * 60, rel=0.1) and p["eta"] is not None
    trials = client.get(f"/v1/jobs/{jid}/trials", params={"state": "running"}).json()["data"]
    assert [t["stage"]["text"] for t in trials] == ["training parent epoch 3/6", stages[2]]


def _events(client: TestClient, url: str, max_s: float) -> list[tuple[str, dict[str, Any]]]:
    out = []
    with client.stream("GET", url, params={"max_s": max_s}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                assert name is not None
                out.append((name, json.loads(line[6:])))
    return out


def test_the_event_stream(client: TestClient, settings: Settings, db_url: str) -> None:
    job = _submit(client, "streamed")
    jid = job["id"]
    events = _events(client, f"/v1/jobs/{jid}/events", 0)
    assert [n for n, _ in events] == ["job"] and events[0][1]["status"] == "queued"
    _running(db_url, jid, [0])
    with progress.reporting(settings.progress_file(jid, 0)):
        progress.report("compressing")
    events = _events(client, f"/v1/jobs/{jid}/events", 0)
    assert ("trial", {"trial": 0, "state": "running", "stage": "compressing"}) in events
    client.post(f"/v1/jobs/{jid}/cancel")  # running: cancelling until its scheduler ends it
    with get_sessionmaker(db_url)() as s:
        row = s.get(Job, jid)
        assert row is not None
        row.status = row.status.__class__.cancelled
        s.commit()
    events = _events(client, f"/v1/jobs/{jid}/events", 30)  # ends with the job, not at 30 s
    assert events[-1] == ("end", {"id": jid, "status": "cancelled"})
    r = client.get("/v1/jobs/999/events", params={"max_s": 0})
    assert r.status_code == 404


def test_metrics_and_readiness(client: TestClient, db_url: str) -> None:
    job = _submit(client, "measured")
    _running(db_url, job["id"], [0, 1])
    runs = [
        {
            "timings": {"parent_s": 10.0, "compress_s": 5.0, "prefilter_s": 1.0, "probe_s": 2.0},
            "parent_cache_hit": True,
            "probe_cache_hits": [True, False],
            "probe_tasks": [[3, 4]],
        }
    ]
    records = TrialRecords(Fence(get_sessionmaker(db_url), job["id"], "w", None), job["id"])
    records.update(0, TrialState.complete, timings={"runs": runs})
    text = client.get("/metrics").text
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert "# TYPE hwnas_jobs gauge" in text
    assert lines['hwnas_jobs{state="running"}'] == "1" and lines["hwnas_queue_depth"] == "0"
    assert lines['hwnas_trials{state="complete"}'] == "1"
    assert lines['hwnas_trials{state="running"}'] == "1"
    assert float(lines["hwnas_training_seconds_total"]) == 15.0
    assert float(lines["hwnas_probe_seconds_total"]) == 3.0
    assert float(lines['hwnas_cache_hit_ratio{cache="probe"}']) == 0.5
    assert float(lines['hwnas_cache_hit_ratio{cache="tuning_task"}']) == 0.75
    assert float(lines["hwnas_trials_per_minute"]) == pytest.approx(1 / 5)
    _, token = new_user(client, "ops")
    assert client.get("/metrics", headers=as_token(client, token)).status_code == 403

    anon = {"Authorization": ""}
    r = client.get("/readyz", headers=anon)
    assert r.status_code == 503 and "no scheduler" in r.json()["reasons"][0]
    with get_sessionmaker(db_url)() as s:
        s.add(SchedulerPresence(worker_id="w", host="h", pid=1, ray_ok=False, ray_detail="gone"))
        s.commit()
    r = client.get("/readyz", headers=anon)
    assert r.status_code == 503 and "Ray answers: gone" in r.json()["reasons"][0]
    with get_sessionmaker(db_url)() as s:
        row = s.get(SchedulerPresence, "w")
        assert row is not None
        row.ray_ok, row.ray_detail = True, "2 CPUs, 0 GPUs"
        s.commit()
    r = client.get("/readyz", headers=anon)
    assert r.status_code == 200 and r.json()["schedulers_ray_ok"] == 1
