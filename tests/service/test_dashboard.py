"""The Optuna dashboard served by the API behind accounts, on SQLite and PostgreSQL: no page or
JSON without a token, each account sees its own jobs' studies (an admin all), nothing can be
written, studies carry their job's name and owner, and the verified latency is a number the
dashboard can chart."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from fastapi.testclient import TestClient

from service.dashboard import COOKIE, AccountStudies, ReadOnlyError, Viewer
from service.db.session import get_sessionmaker
from service.scheduler.front import VERIFIED_PREFIX
from service.scheduler.study import get_storage, open_study
from service.schemas import JobSpec
from tests.service.api import admin_client, api_settings, as_token, new_user

JOB = {
    "dataset": "digits",
    "space": "mlp_small",
    "profiles": ["x86/local"],
    "objectives": ["accuracy", "latency"],
    "budget": {"trials": 2, "tune_s": 0},
    "tuning": "off",
}


@dataclass
class World:
    client: TestClient
    alice: dict[str, str]
    mallory: dict[str, str]
    alice_token: str
    study_ids: dict[str, int]  # job name -> study id
    url: str


def _job_with_a_study(client: TestClient, headers: dict[str, str], name: str, url: str) -> int:
    r = client.post("/v1/jobs", json={**JOB, "name": name}, headers=headers)
    assert r.status_code == 201, r.text
    job_id = int(r.json()["id"])
    study = open_study(url, job_id, JobSpec.model_validate(r.json()["spec"]))
    study.tell(study.ask(), [0.9, 0.42])  # search-time latency 0.42 ms
    study.set_user_attr(f"{VERIFIED_PREFIX}0", {"latency": {"x86/local": _verified(0.37)}})
    return study._study_id


def _verified(ms: float) -> dict[str, object]:
    return {"median_ms": ms, "speedup_vs_dense": 2.5, "dense_ms": ms * 2.5, "windows": 3}


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    with admin_client(api_settings(db_url, tmp_path)) as client:
        _, a = new_user(client, "alice")
        _, m = new_user(client, "mallory")
        alice, mallory = as_token(client, a), as_token(client, m)
        ids = {
            "alice-job": _job_with_a_study(client, alice, "alice-job", db_url),
            "mallory-job": _job_with_a_study(client, mallory, "mallory-job", db_url),
        }
        yield World(client, alice, mallory, a, ids, db_url)


def _names(r: object) -> list[str]:
    return [s["study_name"] for s in r.json()["study_summaries"]]  # type: ignore[attr-defined]


def test_nothing_without_a_token(world: World) -> None:
    c = world.client
    bare = {"Authorization": ""}
    r = c.get("/dashboard/", headers=bare, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/dashboard/login")
    for path in (
        "/api/studies",
        f"/api/studies/{world.study_ids['alice-job']}",
        "/csv/1",
        "/static/bundle.js",
        "/api/meta",
    ):
        r = c.get(path, headers=bare)
        assert r.status_code == 401, path
        assert "study" not in r.text and "alice" not in r.text
    r = c.get("/api/studies", headers={"Authorization": "Bearer hwnas_not-a-token"})
    assert r.status_code == 401
    page = c.get("/dashboard/login", headers=bare)
    assert page.status_code == 200 and "token" in page.text and "bundle.js" not in page.text


def test_each_account_sees_its_own_studies_named_for_people(world: World) -> None:
    c = world.client
    assert _names(c.get("/api/studies", headers=world.mallory)) == ["job-2 · mallory-job (mallory)"]
    assert _names(c.get("/api/studies", headers=world.alice)) == ["job-1 · alice-job (alice)"]
    assert len(_names(c.get("/api/studies"))) == 2  # the admin's token: every account's
    summary = c.get("/api/studies", headers=world.alice).json()["study_summaries"][0]
    attrs = {a["key"]: a["value"] for a in summary["user_attrs"]}
    assert attrs["owner"] == "alice" and attrs["hwnas_job_name"] == "alice-job"
    theirs = world.study_ids["alice-job"]
    paths = (f"/api/studies/{theirs}", f"/csv/{theirs}", f"/api/studies/{theirs}/param_importances")
    for path in paths:
        r = c.get(path, headers=world.mallory)
        assert r.status_code == 404 and "alice" not in r.text, (path, r.text)


def test_the_dashboard_is_read_only(world: World) -> None:
    c, sid = world.client, world.study_ids["mallory-job"]
    for method, path, body in (
        ("DELETE", f"/api/studies/{sid}", None),
        ("POST", "/api/studies", {"study_name": "x", "directions": ["minimize"]}),
        ("POST", f"/api/studies/{sid}/rename", {"study_name": "y"}),
        ("POST", "/api/trials/1/tell", {"state": "Fail"}),
        ("POST", "/api/trials/1/user-attrs", {"user_attrs": {"a": 1}}),
        ("PUT", f"/api/studies/{sid}/note", {"version": 0, "body": "hi"}),
    ):
        r = c.request(method, path, json=body, headers=world.mallory)
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD", (method, path)
    assert len(_names(c.get("/api/studies"))) == 2
    view = AccountStudies(get_storage(world.url), get_sessionmaker(world.url), Viewer(1, "a", True))
    with pytest.raises(ReadOnlyError):
        view.delete_study(sid)
    with pytest.raises(ReadOnlyError):
        view.set_trial_user_attr(1, "a", 1)


def test_verified_latency_is_a_number_the_dashboard_charts(world: World) -> None:
    detail = world.client.get(
        f"/api/studies/{world.study_ids['alice-job']}", headers=world.alice
    ).json()
    (trial,) = detail["trials"]
    attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
    assert float(attrs["verified_latency_ms@x86/local"]) == pytest.approx(0.37)
    assert float(attrs["verified_speedup_vs_dense@x86/local"]) == pytest.approx(2.5)
    sortable = {a["key"]: a["sortable"] for a in detail["union_user_attrs"]}
    assert sortable["verified_latency_ms@x86/local"] is True  # offered as a plot axis
    summary = world.client.get("/api/studies", headers=world.alice).json()["study_summaries"][0]
    assert not any(a["key"].startswith(VERIFIED_PREFIX) for a in summary["user_attrs"])


def test_a_browser_signs_in_with_a_token_and_gets_a_cookie(world: World) -> None:
    c = world.client
    bare = {"Authorization": ""}
    r = c.post("/dashboard/login", data={"token": "wrong", "next": "/dashboard"}, headers=bare)
    assert r.status_code == 401 and "not valid" in r.text
    r = c.post(
        "/dashboard/login",
        data={"token": world.alice_token, "next": "https://evil.example/"},
        headers=bare,
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/dashboard"  # no open redirect
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    browser = {"Authorization": "", "Cookie": f"{COOKIE}={r.cookies[COOKIE]}"}
    page = c.get("/dashboard", headers=browser)
    assert page.status_code == 200 and "bundle.js" in page.text
    assert _names(c.get("/api/studies", headers=browser)) == ["job-1 · alice-job (alice)"]
    r = c.get("/dashboard/logout", headers=browser, follow_redirects=False)
    assert r.status_code == 303 and "Max-Age=0" in r.headers["set-cookie"]


def test_the_api_keeps_its_own_answers(world: World) -> None:
    """Only the dashboard's paths are taken: the API's 404s and routes are its own."""
    r = world.client.get("/v1/nothing-here")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
    assert world.client.get("/healthz").status_code == 200
    assert optuna.__version__  # the dashboard reads Optuna's own tables beside ours
