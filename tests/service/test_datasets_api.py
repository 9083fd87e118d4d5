"""Dataset upload (.npz, no pickle) and jobs on uploaded data, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.service.api import admin_client, api_settings, as_token, new_user
from workers.data import load_splits


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = api_settings(db_url, tmp_path, max_upload_bytes=200_000)
    with admin_client(settings) as c:
        yield c


def _npz(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _images(n: int, classes: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.integers(0, 256, (n, 1, 6, 6), dtype=np.uint8),
        "y": rng.integers(0, classes, n),
    }


def _valid() -> bytes:
    tr, te = _images(120), _images(30, seed=1)
    return _npz(x_train=tr["x"], y_train=tr["y"], x_test=te["x"], y_test=te["y"])


def test_upload_lists_and_loads_with_fixed_splits(client: TestClient, tmp_path: Path) -> None:
    r = client.post("/v1/datasets", params={"name": "toy"}, content=_valid())
    assert r.status_code == 201, r.text
    body = r.json()
    assert {k: body[k] for k in ("name", "input_shape", "num_classes", "sizes", "owner")} == {
        "name": "user/toy",
        "input_shape": [1, 6, 6],
        "num_classes": 3,
        "sizes": {"train": 120, "test": 30},
        "owner": "admin",
    }
    assert body["size_bytes"] > 0
    names = [d["name"] for d in client.get("/v1/datasets").json()["data"]]
    assert {"digits", "fashion_mnist", "user/toy"} <= set(names)
    admin_id = client.get("/v1/me").json()["id"]
    root = tmp_path / "artifacts" / "datasets" / str(admin_id)  # the owner's own directory
    a = load_splits("user/toy", 0, root)
    b = load_splits("user/toy", 0, root)
    assert len(a.train) + len(a.val) == 120 and len(a.test) == 30
    assert np.array_equal(a.val.x, b.val.x) and np.asarray(a.train.x).max() <= 1.0  # / 255
    assert client.post("/v1/datasets", params={"name": "toy"}, content=_valid()).status_code == 409
    (event,) = client.get("/v1/audit", params={"action": "dataset.upload"}).json()["data"]
    assert event["target"] == "dataset user/toy" and event["user_name"] == "admin"


def test_job_on_uploaded_data_is_accepted_and_unknown_one_refused(client: TestClient) -> None:
    client.post("/v1/datasets", params={"name": "toy"}, content=_valid())
    job = {
        "dataset": "user/toy",
        "space": "cnn_joint",
        "profiles": ["x86/local"],
        "budget": {"trials": 2},
    }
    assert client.post("/v1/jobs", json=job).status_code == 201
    r = client.post("/v1/jobs", json={**job, "dataset": "user/missing"})
    assert r.status_code == 404 and "user/missing" in r.json()["detail"]
    assert client.get("/v1/jobs").json()["count"] == 1


def test_uploads_are_their_owners_own(client: TestClient) -> None:
    """Another account neither lists nor uses your upload; it may upload its own of the same
    name."""
    client.post("/v1/datasets", params={"name": "toy"}, content=_valid())
    _, token = new_user(client, "bob")
    bob = as_token(client, token)
    listed = [d["name"] for d in client.get("/v1/datasets", headers=bob).json()["data"]]
    assert "user/toy" not in listed and "digits" in listed
    job = {"dataset": "user/toy", "space": "cnn_joint", "profiles": ["x86/local"]}
    r = client.post("/v1/jobs", json={**job, "budget": {"trials": 2}}, headers=bob)
    assert r.status_code == 404
    r = client.post("/v1/datasets", params={"name": "toy"}, content=_valid(), headers=bob)
    assert r.status_code == 201 and r.json()["owner"] == "bob"
    admin_view = [d for d in client.get("/v1/datasets").json()["data"] if d["owner"]]
    assert sorted(d["owner"] for d in admin_view) == ["admin", "bob"]


def test_grayscale_n_h_w_is_one_channel(client: TestClient) -> None:
    rng = np.random.default_rng(0)
    blob = _npz(
        x_train=rng.integers(0, 256, (60, 6, 6), dtype=np.uint8),
        y_train=np.arange(60) % 3,
        x_test=rng.integers(0, 256, (20, 6, 6), dtype=np.uint8),
        y_test=np.arange(20) % 3,
    )
    r = client.post("/v1/datasets", params={"name": "gray"}, content=blob)
    assert r.status_code == 201, r.text
    assert r.json()["input_shape"] == [1, 6, 6]


def test_storage_quota_is_403_naming_it(client: TestClient) -> None:
    _, token = new_user(client, "carol", max_storage_bytes=1000)
    r = client.post(
        "/v1/datasets", params={"name": "toy"}, content=_valid(), headers=as_token(client, token)
    )
    assert r.status_code == 403 and "max_storage_bytes = 1000" in r.json()["detail"]
    listed = client.get("/v1/datasets", headers=as_token(client, token)).json()["data"]
    assert "user/toy" not in [d["name"] for d in listed]


BAD = [
    (lambda: _npz(x_train=np.array([{"a": 1}], dtype=object)), "object arrays are refused"),
    (lambda: b"not a zip", "not a readable .npz"),
    (
        lambda: _npz(x_train=np.zeros((20, 4), np.float32), y_train=np.zeros(20, int)),
        "missing arrays",
    ),
    (
        lambda: _npz(
            x_train=np.zeros((20, 4), np.float32),
            y_train=np.zeros(19, int),
            x_test=np.zeros((20, 4), np.float32),
            y_test=np.zeros(20, int),
        ),
        "y_train",
    ),
    (
        lambda: _npz(
            x_train=np.zeros((20, 4), np.int32),
            y_train=np.zeros(20, int),
            x_test=np.zeros((20, 4), np.int32),
            y_test=np.zeros(20, int),
        ),
        "dtype int32",
    ),
    (
        lambda: _npz(
            x_train=np.zeros((20, 4), np.float32),
            y_train=np.zeros(20, int),
            x_test=np.zeros((20, 5), np.float32),
            y_test=np.zeros(20, int),
        ),
        "sample shape",
    ),
    (
        lambda: _npz(
            x_train=np.zeros((20, 4), np.float32),
            y_train=np.zeros(20, int),
            x_test=np.zeros((20, 4), np.float32),
            y_test=np.zeros(20, int),
        ),
        "fewer than 2",
    ),
    (
        lambda: _npz(
            x_train=np.full((20, 4), np.nan, np.float32),
            y_train=np.arange(20) % 2,
            x_test=np.zeros((20, 4), np.float32),
            y_test=np.arange(20) % 2,
        ),
        "NaN",
    ),
]


@pytest.mark.parametrize(("make", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_uploads_are_refused_naming_the_problem(
    client: TestClient, make: Any, message: str
) -> None:
    r = client.post("/v1/datasets", params={"name": "bad"}, content=make())
    assert r.status_code == 422, r.text
    (err,) = r.json()["detail"]
    assert err["loc"] == ["body"] and message in err["msg"], err
    assert "user/bad" not in [d["name"] for d in client.get("/v1/datasets").json()["data"]]


def test_upload_over_the_limit_is_413_and_bad_name_422(client: TestClient) -> None:
    big = _npz(x_train=np.zeros((2000, 100), np.float32))
    r = client.post("/v1/datasets", params={"name": "big"}, content=big)
    assert r.status_code == 413
    r = client.post("/v1/datasets", params={"name": "../etc"}, content=_valid())
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "name"]


def test_decoded_size_over_the_limit_is_413_before_decompressing(
    db_url: str, tmp_path: Path
) -> None:
    """A small zip that would decode large (zeros compress well) is refused from its headers."""
    settings = api_settings(db_url, tmp_path, max_dataset_bytes=100_000)
    blob = _npz(
        x_train=np.zeros((1000, 1, 8, 8), np.uint8),  # 64 KB as uint8, 256 KB as float32
        y_train=np.arange(1000) % 2,
        x_test=np.zeros((20, 1, 8, 8), np.uint8),
        y_test=np.arange(20) % 2,
    )
    with admin_client(settings) as c:
        r = c.post("/v1/datasets", params={"name": "zeros"}, content=blob)
    assert r.status_code == 413 and "x_train" in r.json()["detail"], r.text


def test_a_job_trains_on_its_owners_upload(db_url: str, tmp_path: Path) -> None:
    """Submitted over the API by an ordinary account, claimed and run by the controller: the
    worker reads the upload from its owner's directory."""
    from service.db.models import Job, JobStatus
    from service.db.queue import claim_job
    from service.db.session import get_sessionmaker
    from service.scheduler.controller import JobController
    from tests.service.inline import InlineExecutor

    settings = api_settings(db_url, tmp_path, verify=False, poll_interval_s=0.01)
    with admin_client(settings) as c:
        _, token = new_user(c, "uma")
        uma = as_token(c, token)
        rng = np.random.default_rng(0)
        blob = _npz(
            x_train=rng.random((120, 16), dtype=np.float32),
            y_train=np.arange(120) % 2,
            x_test=rng.random((40, 16), dtype=np.float32),
            y_test=np.arange(40) % 2,
        )
        assert c.post("/v1/datasets", params={"name": "flat"}, content=blob, headers=uma).is_success
        spec = {
            "dataset": "user/flat",
            "space": "mlp_small",
            "space_overrides": {"depth": [1], "width": [16]},
            "profiles": ["x86/local"],
            "objectives": ["accuracy", "size"],
            "budget": {"trials": 1, "tune_s": 0},
            "training": {"epochs": 1, "finetune_epochs": 0},
            "tuning": "off",
        }
        r = c.post("/v1/jobs", json=spec, headers=uma)
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
    with get_sessionmaker(db_url)() as s:
        assert claim_job(session=s, worker_id="t", stale_after_s=60) is not None
    status = JobController(settings, InlineExecutor(set()), job_id, "t").run()
    with get_sessionmaker(db_url)() as s:
        job = s.get(Job, job_id)
        assert job is not None
        assert status == JobStatus.succeeded, job.error
        assert job.trials_complete == 1


def test_uploads_from_before_accounts_become_the_admins(db_url: str, tmp_path: Path) -> None:
    import json

    from workers.data import validate_npz

    settings = api_settings(db_url, tmp_path)
    arrays, info = validate_npz(_valid())  # the old flat layout: <name>.npz + <name>.json
    settings.user_data_dir.mkdir(parents=True)
    np.savez(settings.user_data_dir / "legacy.npz", **arrays)
    (settings.user_data_dir / "legacy.json").write_text(json.dumps(info))
    with admin_client(settings) as c:
        listed = {d["name"]: d for d in c.get("/v1/datasets").json()["data"]}
        admin_id = c.get("/v1/me").json()["id"]
    assert listed["user/legacy"]["owner"] == "admin"
    assert (settings.datasets_dir(admin_id) / "legacy.npz").is_file()
    assert not (settings.user_data_dir / "legacy.npz").exists()


def test_poison_uploads_are_refused_and_a_stored_one_cannot_become_a_job(
    client: TestClient, tmp_path: Path
) -> None:
    """Labels past the class bound (or wrapping as int64), values overflowing float32 and empty
    dimensions are 4xx naming the array; a poison dataset stored before these checks (written
    straight to disk here) is refused at submit with the reason, never queued."""
    import json

    x = np.random.default_rng(0).random((60, 1, 8, 8), dtype=np.float32)
    y = np.arange(60) % 3
    poison = {
        "huge": {"x_train": x, "y_train": np.where(y == 2, 2**40, y), "x_test": x, "y_test": y},
        "wraps": {
            "x_train": x,
            "y_train": np.where(y == 2, np.iinfo(np.uint64).max, y).astype(np.uint64),
            "x_test": x,
            "y_test": y,
        },
        "overflow": {
            "x_train": np.where(x > 0.5, 1e300, x.astype(np.float64)),
            "y_train": y,
            "x_test": x,
            "y_test": y,
        },
        "flat0": {
            "x_train": np.zeros((60, 0)),
            "y_train": y,
            "x_test": np.zeros((60, 0)),
            "y_test": y,
        },
    }
    for name, arrays in poison.items():
        r = client.post("/v1/datasets", params={"name": name}, content=_npz(**arrays))
        assert r.status_code == 422, (name, r.text)
        (err,) = r.json()["detail"]
        assert err["msg"].split(":")[0] in ("x_train", "y_train"), (name, err)
    admin_id = client.get("/v1/me").json()["id"]
    root = tmp_path / "artifacts" / "datasets" / str(admin_id)
    root.mkdir(parents=True, exist_ok=True)
    info = {"input_shape": [1, 8, 8], "num_classes": 2**40 + 1, "sizes": {"train": 60}}
    (root / "legacy.json").write_text(json.dumps(info))
    job = {"dataset": "user/legacy", "space": "cnn_joint", "profiles": ["x86/local"]}
    r = client.post("/v1/jobs", json={**job, "budget": {"trials": 2}})
    assert r.status_code == 422, r.text
    (err,) = r.json()["detail"]
    assert err["loc"] == ["body", "dataset"] and "num_classes" in err["msg"], err
    assert client.get("/v1/jobs").json()["count"] == 0


def test_an_image_folder_zip_is_a_dataset(client: TestClient) -> None:
    """One folder of images per class, resized to the declared size; without a size, 422."""
    import zipfile

    from PIL import Image

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for c, colour in enumerate(((250, 0, 0), (0, 250, 0))):
            for i in range(25):
                img = io.BytesIO()
                Image.new("RGB", (40, 30), colour).save(img, format="PNG")
                zf.writestr(f"shots/class{c}/{i}.png", img.getvalue())
    r = client.post("/v1/datasets", params={"name": "shots"}, content=buf.getvalue())
    assert r.status_code == 422 and "image_size" in r.json()["detail"][0]["msg"]
    r = client.post(
        "/v1/datasets", params={"name": "shots", "image_size": "16x20"}, content=buf.getvalue()
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["input_shape"] == [3, 16, 20] and body["num_classes"] == 2
    assert body["description"] == "image-folder zip" and body["sizes"] == {"train": 40, "test": 10}
