"""Accounts and tokens, ownership, quotas, the submit rate limit and the audit log, on SQLite
and PostgreSQL: what a team sharing one service relies on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.db.models import ApiToken, Job, utcnow
from service.db.session import get_sessionmaker
from tests.service.api import ADMIN, admin_client, api_settings, as_token, new_user

DEMO = json.loads((Path(__file__).resolve().parents[2] / "examples" / "demo-job.json").read_text())
SMALL = {**DEMO, "budget": {"trials": 2}}


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with admin_client(api_settings(db_url, tmp_path, submit_rate_per_min=3)) as c:
        yield c


def test_every_route_but_healthz_needs_a_valid_token(client: TestClient) -> None:
    anon = {"Authorization": ""}
    assert client.get("/healthz", headers=anon).status_code == 200
    assert client.get("/readyz", headers=anon).status_code in (200, 503)  # open, like healthz
    paths = client.get("/openapi.json").json()["paths"]
    for path, ops in paths.items():
        if path in ("/healthz", "/readyz"):
            continue
        for method in ops:
            url = path.replace("{job_id}", "1").replace("{user_id}", "1")
            url = url.replace("{token_id}", "1").replace("{model_id}", "1-0")
            url = url.replace("{name}", "toy")
            for headers in (anon, {"Authorization": "Bearer not-a-token"}):
                r = client.request(method, url, headers=headers)
                assert r.status_code == 401, (method, url, r.text)
                assert r.headers["www-authenticate"] == "Bearer"
            assert ops[method]["security"] == [{"token": []}], (method, path)


def test_tokens_are_random_shown_once_stored_hashed_and_revocable(
    client: TestClient, db_url: str
) -> None:
    user_id, token = new_user(client, "alice")
    me = client.get("/v1/me", headers=as_token(client, token)).json()
    assert me["name"] == "alice" and me["is_admin"] is False
    listed = client.get(f"/v1/users/{user_id}/tokens").json()["data"]
    assert "token" not in listed[0] and token.startswith(listed[0]["prefix"])
    with get_sessionmaker(db_url)() as s:
        stored = s.scalars(select(ApiToken)).all()
    assert all(token not in (t.secret_hash, t.prefix) for t in stored)
    assert len(token) > 40
    # a second token, revoked by its own account: it fails, the first still works
    r = client.post(f"/v1/users/{user_id}/tokens", json={}, headers=as_token(client, token))
    assert r.status_code == 201
    second, second_id = r.json()["token"], r.json()["id"]
    assert client.get("/v1/me", headers=as_token(client, second)).status_code == 200
    r = client.delete(f"/v1/tokens/{second_id}", headers=as_token(client, token))
    assert r.status_code == 204
    assert client.get("/v1/me", headers=as_token(client, second)).status_code == 401
    assert client.get("/v1/me", headers=as_token(client, token)).status_code == 200
    # expired
    with get_sessionmaker(db_url)() as s:
        row = s.scalar(select(ApiToken).where(ApiToken.prefix == token[:12]))
        assert row is not None
        row.expires_at = utcnow() - timedelta(seconds=1)
        s.commit()
    assert client.get("/v1/me", headers=as_token(client, token)).status_code == 401


def test_disabled_account_and_admin_only_routes(client: TestClient) -> None:
    user_id, token = new_user(client, "dave")
    dave = as_token(client, token)
    assert client.post("/v1/users", json={"name": "eve"}, headers=dave).status_code == 403
    assert client.get("/v1/users", headers=dave).status_code == 403
    admin_id = client.get("/v1/me").json()["id"]
    # another account's tokens are not found, not forbidden
    assert client.post(f"/v1/users/{admin_id}/tokens", json={}, headers=dave).status_code == 404
    assert client.post("/v1/users", json={"name": "dave"}).status_code == 409
    r = client.patch(f"/v1/users/{user_id}", json={"disabled": True})
    assert r.status_code == 200 and r.json()["disabled_at"] is not None
    assert client.get("/v1/me", headers=dave).status_code == 401
    assert client.patch(f"/v1/users/{admin_id}", json={"disabled": True}).status_code == 409


def test_another_accounts_job_and_model_answer_404(client: TestClient) -> None:
    _, a_token = new_user(client, "ann")
    _, b_token = new_user(client, "ben")
    ann, ben = as_token(client, a_token), as_token(client, b_token)
    job = client.post("/v1/jobs", json=SMALL, headers=ann).json()
    assert job["owner"] == "ann"
    jid = job["id"]
    for method, url in [
        ("GET", f"/v1/jobs/{jid}"),
        ("GET", f"/v1/jobs/{jid}/trials"),
        ("GET", f"/v1/jobs/{jid}/report"),
        ("GET", f"/v1/jobs/{jid}/pareto"),
        ("GET", f"/v1/jobs/{jid}/best"),
        ("POST", f"/v1/jobs/{jid}/cancel"),
        ("GET", f"/v1/models/{jid}-0"),
    ]:
        r = client.request(method, url, headers=ben)
        assert r.status_code == 404, (method, url, r.text)
    listed = client.get("/v1/jobs", headers=ben).json()
    assert (listed["data"], listed["count"]) == ([], 0)
    r = client.post("/v1/jobs", json={**SMALL, "warm_start_from": jid}, headers=ben)
    assert r.status_code == 404
    assert client.get(f"/v1/jobs/{jid}", headers=ann).status_code == 200
    # the admin sees every job, with its owner
    assert [j["owner"] for j in client.get("/v1/jobs").json()["data"]] == ["ann"]
    assert client.post(f"/v1/jobs/{jid}/cancel").status_code == 200


def test_quotas_answer_403_naming_the_limit(client: TestClient) -> None:
    _, token = new_user(client, "quinn", max_active_jobs=1, max_active_trials=5)
    q = as_token(client, token)
    r = client.post("/v1/jobs", json={**SMALL, "budget": {"trials": 6}}, headers=q)
    assert r.status_code == 403 and "max_active_trials = 5" in r.json()["detail"]
    first = client.post("/v1/jobs", json=SMALL, headers=q)
    assert first.status_code == 201
    r = client.post("/v1/jobs", json=SMALL, headers=q)
    assert r.status_code == 403 and "max_active_jobs = 1" in r.json()["detail"]
    client.post(f"/v1/jobs/{first.json()['id']}/cancel", headers=q)
    assert client.post("/v1/jobs", json=SMALL, headers=q).status_code == 201
    me = client.get("/v1/me", headers=q).json()
    assert me["usage"]["active_jobs"] == 1 and me["quotas"]["max_active_jobs"] == 1
    # an extension that would pass the quota is refused as well, and changes nothing
    r = client.post(f"/v1/jobs/{first.json()['id']}/extend", json={"trials": 1}, headers=q)
    assert r.status_code == 403
    assert client.get(f"/v1/jobs/{first.json()['id']}", headers=q).json()["status"] == "cancelled"


def test_submit_rate_limit_is_429_with_retry_after(client: TestClient) -> None:
    _, token = new_user(client, "rita", max_active_jobs=100)
    r_headers = as_token(client, token)
    codes = [client.post("/v1/jobs", json=SMALL, headers=r_headers).status_code for _ in range(4)]
    assert codes == [201, 201, 201, 429]
    r = client.post("/v1/jobs", json=SMALL, headers=r_headers)
    assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60
    assert "3 job submissions or extensions a minute" in r.json()["detail"]
    # the admin (quota-exempt) is not limited
    assert all(client.post("/v1/jobs", json=SMALL).status_code == 201 for _ in range(4))


def test_audit_log_says_who_did_what(client: TestClient) -> None:
    _, token = new_user(client, "audrey")
    a = as_token(client, token)
    jid = client.post("/v1/jobs", json=SMALL, headers=a).json()["id"]
    client.post(f"/v1/jobs/{jid}/cancel", headers=a)
    client.post(f"/v1/jobs/{jid}/extend", json={"trials": 1}, headers=a)
    client.post(f"/v1/jobs/{jid}/cancel")  # by the admin
    mine = client.get("/v1/audit", headers=a).json()["data"]
    assert [(e["action"], e["target"]) for e in mine] == [
        ("job.extend", f"job {jid}"),
        ("job.cancel", f"job {jid}"),
        ("job.submit", f"job {jid}"),
    ]
    assert {e["user_name"] for e in mine} == {"audrey"}
    everyone = client.get("/v1/audit").json()["data"]
    assert ("admin", "job.cancel") == (everyone[0]["user_name"], everyone[0]["action"])
    assert {"user.create", "token.create"} <= {e["action"] for e in everyone}


@pytest.mark.parametrize(
    ("url", "codes"),
    [
        ("/v1/jobs/99999999999999999999", {422}),
        ("/v1/jobs/0", {422}),
        ("/v1/jobs?skip=99999999999999999999", {422}),
        ("/v1/jobs/2147483647", {404}),
        ("/v1/models/99999999999999999999-1", {422}),
        ("/v1/models/9999999999-1", {404}),
        ("/v1/models/1-9999999999", {404}),
    ],
)
def test_ids_are_bounded(client: TestClient, url: str, codes: set[int]) -> None:
    assert client.get(url).status_code in codes


def test_internal_errors_return_an_id_not_the_exception(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from service.db import crud

    def boom(**_: object) -> None:
        raise RuntimeError("secret internals: password=hunter2")

    monkeypatch.setattr(crud, "list_jobs", boom)
    with TestClient(client.app, base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        r = c.get("/v1/jobs", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 500
    body = r.json()
    assert "hunter2" not in r.text and len(body["error_id"]) == 12
    assert body["error_id"] in caplog.text and "hunter2" in caplog.text


def test_untrusted_host_and_methods(client: TestClient) -> None:
    r = client.get("/healthz", headers={"Host": "evil.example"})
    assert r.status_code == 400
    r = client.delete("/v1/jobs")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"


def test_timestamps_are_utc_with_an_offset(client: TestClient, db_url: str) -> None:
    job = client.post("/v1/jobs", json=SMALL).json()
    assert job["created_at"].endswith("Z") or job["created_at"].endswith("+00:00")
    with get_sessionmaker(db_url)() as s:
        row = s.get(Job, job["id"])
        assert row is not None and row.created_at.utcoffset() == timedelta(0)
