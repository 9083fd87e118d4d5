"""Hostile JSON bodies: non-finite numbers are 422 naming the field (never a 500), bodies past
HWNAS_MAX_JSON_BYTES are 413, errors quote at most about 1 KB of the input, and extensions
count against the submit rate limit."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.quoting import QUOTE_BYTES, quote, safe_errors
from tests.service.api import admin_client, api_settings, new_user

JOB = {
    "dataset": "digits",
    "space": "mlp_small",
    "profiles": ["x86/local"],
    "objectives": ["accuracy", "size"],
    "budget": {"trials": 1, "tune_s": 0},
    "training": {"epochs": 1, "finetune_epochs": 1},
    "tuning": "off",
}
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = api_settings(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path, submit_rate_per_min=3)
    with admin_client(settings) as c:
        yield c


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "-1E999"])
def test_non_finite_numbers_are_422_naming_the_field(client: TestClient, literal: str) -> None:
    body = json.dumps(JOB).replace('"epochs": 1,', f'"epochs": 1, "lr": {literal},')
    r = client.post("/v1/jobs", content=body, headers=JSON)
    assert r.status_code == 422, r.text
    (err,) = r.json()["detail"]
    assert err["loc"] == ["body", "training", "lr"] and literal in err["msg"]
    r = client.post(
        "/v1/users/1/tokens", content='{"name": "a", "expires_in_days": NaN}', headers=JSON
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "expires_in_days"]
    listed = client.post("/v1/jobs", content=f'{{"constraints": [1, [{literal}]]}}', headers=JSON)
    assert listed.json()["detail"][0]["loc"] == ["body", "constraints", 1, 0]
    assert client.get("/v1/jobs").json()["count"] == 0


def test_a_body_past_the_limit_is_413_and_small(client: TestClient) -> None:
    big = json.dumps({**JOB, "name": "x" * 3_000_000})
    r = client.post("/v1/jobs", content=big, headers=JSON)
    assert r.status_code == 413 and "HWNAS_MAX_JSON_BYTES" in r.json()["detail"]
    assert len(r.content) < 1000
    # without a content length the stream itself is cut at the limit
    chunks = (big[i : i + 65536].encode() for i in range(0, len(big), 65536))
    r = client.post("/v1/jobs", content=chunks, headers=JSON)
    assert r.status_code == 413


def test_errors_quote_at_most_a_kilobyte(client: TestClient) -> None:
    r = client.post("/v1/jobs", json={**JOB, "name": "x" * 900_000})
    assert r.status_code == 422 and len(r.content) < 4 * QUOTE_BYTES
    (err,) = r.json()["detail"]
    assert err["loc"] == ["body", "name"] and "more characters" in err["input"]
    r = client.post("/v1/jobs", json={**JOB, "constraints": ["size <= " + "1" * 500_000 + " KB"]})
    assert r.status_code == 422 and len(r.content) < 4 * QUOTE_BYTES
    r = client.post("/v1/jobs", json=[{"x": i} for i in range(50_000)])
    assert r.status_code == 422 and len(r.content) < 20 * QUOTE_BYTES


def test_quoting_keeps_what_json_can_carry() -> None:
    assert quote(math.nan) == "NaN" and quote(-math.inf) == "-Infinity" and quote(1.5) == 1.5
    assert quote({"a": [1, 2]}) == {"a": [1, 2]}
    assert quote({"a": math.nan}).startswith("{'a': nan")  # the repr, clipped: never NaN
    assert len(quote("y" * 10_000)) < QUOTE_BYTES + 40 and len(quote(b"z" * 10_000)) < 1100
    many = [{"type": "missing", "loc": ("body", i), "msg": "Field required"} for i in range(100)]
    out = safe_errors(many)
    assert len(out) == 21 and out[-1]["msg"] == "80 more errors not shown"
    json.dumps(out, allow_nan=False)


def test_extensions_count_against_the_submit_rate(client: TestClient) -> None:
    _, token = new_user(client, "eve")
    eve = {"Authorization": f"Bearer {token}"}
    job_id = client.post("/v1/jobs", json=JOB, headers=eve).json()["id"]
    client.post(f"/v1/jobs/{job_id}/cancel", headers=eve)
    assert client.post(f"/v1/jobs/{job_id}/extend", json={"trials": 1}, headers=eve).is_success
    client.post(f"/v1/jobs/{job_id}/cancel", headers=eve)
    assert client.post(f"/v1/jobs/{job_id}/extend", json={"trials": 1}, headers=eve).is_success
    client.post(f"/v1/jobs/{job_id}/cancel", headers=eve)
    r = client.post(f"/v1/jobs/{job_id}/extend", json={"trials": 1}, headers=eve)
    assert r.status_code == 429 and "Retry-After" in r.headers  # 1 submit + 2 extends = 3/min
    assert client.post("/v1/jobs", json=JOB, headers=eve).status_code == 429


def test_uploads_keep_their_own_limit(client: TestClient) -> None:
    """The raw upload route is not held to the JSON limit (it has max_upload_bytes)."""
    import io

    import numpy as np

    x = np.random.default_rng(0).random((3000, 1, 8, 8), dtype=np.float32)  # ~770 KB
    buf = io.BytesIO()
    np.savez(buf, x_train=x, y_train=np.arange(3000) % 3, x_test=x[:30], y_test=np.arange(30) % 3)
    body = buf.getvalue() + b"\0" * 600_000  # past 1 MiB in all: a trailing-garbage zip
    r = client.post("/v1/datasets", params={"name": "big"}, content=body)
    assert r.status_code != 413, r.text
