"""Dataset upload (.npz, no pickle) and jobs on uploaded data, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from service.settings import Settings
from workers.data import load_splits


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        database_url=db_url, artifact_dir=tmp_path / "art", max_upload_bytes=200_000
    )
    with TestClient(create_app(settings)) as c:
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
    assert r.json() == {
        "name": "user/toy",
        "input_shape": [1, 6, 6],
        "num_classes": 3,
        "sizes": {"train": 120, "test": 30},
    }
    names = [d["name"] for d in client.get("/v1/datasets").json()["data"]]
    assert {"digits", "fashion_mnist", "user/toy"} <= set(names)
    a = load_splits("user/toy", 0, tmp_path / "art" / "datasets")
    b = load_splits("user/toy", 0, tmp_path / "art" / "datasets")
    assert len(a.train) + len(a.val) == 120 and len(a.test) == 30
    assert np.array_equal(a.val.x, b.val.x) and a.train.x.max() <= 1.0  # uint8 scaled
    assert client.post("/v1/datasets", params={"name": "toy"}, content=_valid()).status_code == 409


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
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "dataset"]
    assert client.get("/v1/jobs").json()["count"] == 1


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
    assert r.status_code == 422 and message in r.json()["detail"], r.text
    assert "user/bad" not in [d["name"] for d in client.get("/v1/datasets").json()["data"]]


def test_upload_over_the_limit_is_413_and_bad_name_422(client: TestClient) -> None:
    big = _npz(x_train=np.zeros((2000, 100), np.float32))
    r = client.post("/v1/datasets", params={"name": "big"}, content=big)
    assert r.status_code == 413
    r = client.post("/v1/datasets", params={"name": "../etc"}, content=_valid())
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "name"]
