"""REST API on SQLite and PostgreSQL: submit, list, inspect, cancel, and bad input."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.service.api import admin_client, api_settings

DEMO = json.loads((Path(__file__).resolve().parents[2] / "examples" / "demo-job.json").read_text())


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with admin_client(api_settings(db_url, tmp_path)) as c:
        yield c


def _count(client: TestClient) -> int:
    return int(client.get("/v1/jobs").json()["count"])


def test_submit_list_get(client: TestClient) -> None:
    r = client.post("/v1/jobs", json=DEMO)
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["status"] == "queued"
    assert job["progress"] == {
        "trials_complete": 0,
        "trials_failed": 0,
        "budget": DEMO["budget"]["trials"],
        "best_accuracy": None,
        "trials_running": [],
        "eta_s": None,
        "eta": None,
    }
    assert job["spec"]["objectives"] == ["accuracy", "latency@x86/local", "size"]
    listed = client.get("/v1/jobs").json()
    assert listed["count"] == 1 and listed["data"][0]["id"] == job["id"]
    got = client.get(f"/v1/jobs/{job['id']}").json()
    assert got["study_name"] == f"job-{job['id']}"
    trials = client.get(f"/v1/jobs/{job['id']}/trials").json()
    assert (trials["data"], trials["count"], trials["next_skip"]) == ([], 0, None)
    assert client.get(f"/v1/jobs/{job['id']}/pareto").json()["data"] == []


def test_objective_latency_expands_to_every_profile(client: TestClient) -> None:
    spec = {**DEMO, "objectives": ["accuracy", "latency", "size"]}
    job = client.post("/v1/jobs", json=spec).json()
    assert job["spec"]["objectives"] == ["accuracy", "latency@x86/local", "size"]


def test_overrides_accept_choices_and_ranges(client: TestClient) -> None:
    spec = {**DEMO, "space_overrides": {"wbits": [4, 8], "prune": {"max": 0.25}}}
    job = client.post("/v1/jobs", json=spec).json()
    assert job["spec"]["space_overrides"] == {"wbits": [4, 8], "prune": [0.0, 0.25]}


def test_cancel_queued_then_conflict(client: TestClient) -> None:
    job_id = client.post("/v1/jobs", json=DEMO).json()["id"]
    r = client.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert r.json()["finished_at"] is not None
    r = client.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 409 and "already ended" in r.json()["detail"]


def test_unknown_job_and_model(client: TestClient) -> None:
    assert client.get("/v1/jobs/999").status_code == 404
    assert client.get("/v1/jobs/999/trials").status_code == 404
    assert client.post("/v1/jobs/999/cancel").status_code == 404
    assert client.get("/v1/models/999-0").status_code == 404
    r = client.get("/v1/models/not-a-model")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "model_id"]


def _with(path: list[str], value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(DEMO)
    node = spec
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return spec


BAD = [
    (["dataset"], "cifar10", ["body", "dataset"], "unknown dataset 'cifar10'"),
    (["space"], "resnet_huge", ["body", "space"], "unknown search space 'resnet_huge'"),
    (["profiles"], ["arm/nowhere"], ["body", "profiles"], "unknown hardware profile 'arm/nowhere'"),
    (["profiles"], [], ["body", "profiles"], "at least 1"),
    (["objectives"], ["accuracy", "speed"], ["body", "objectives"], "unknown objective 'speed'"),
    (["objectives"], ["latency@arm/nowhere"], ["body", "objectives"], "unknown objective"),
    (["objectives"], ["size", "size"], ["body", "objectives"], "duplicate objectives"),
    (["constraints"], ["size < 2 KB"], ["body", "constraints"], "'<=' bounds"),
    (["constraints"], ["accuracy >= 85"], ["body", "constraints"], "must lie in [0, 1]"),
    (["constraints"], ["size <= 1 KB", "size <= 1 KB"], ["body", "constraints"], "duplicate"),
    (["budget", "tune_s"], False, ["body", "budget", "tune_s"], "valid number"),
    (["budget", "trials"], True, ["body", "budget", "trials"], "valid integer"),
    (["budget", "trials"], "4", ["body", "budget", "trials"], "valid integer"),
    (["name"], "a\x00b", ["body", "name"], "pattern"),
    (["dataset"], "user/../x", ["body", "dataset"], "user/<name>"),
    (["fixed_params"], {"stage9.width": 8}, ["body", "fixed_params"], "not a parameter"),
    (["budget", "trials"], 0, ["body", "budget", "trials"], "greater than or equal to 1"),
    (["budget", "trials"], 1_000_000, ["body", "budget", "trials"], "less than or equal"),
    (["training", "epochs"], -1, ["body", "training", "epochs"], "greater than or equal"),
    (["space_overrides"], {"wbits": [3]}, ["body", "space_overrides"], "3 is not allowed"),
    (["space_overrides"], {"depthh": [2]}, ["body", "space_overrides"], "no dimension 'depthh'"),
    (["sampler"], "grid", ["body", "sampler"], "nsga2"),
    (["space_overrides"], {"prune": {"min": 0.8}}, ["body", "space_overrides"], "no allowed value"),
    (["space_overrides"], {"prune": {"low": 0}}, ["body", "space_overrides"], "'min' and/or 'max'"),
    (["surprise"], 1, ["body", "surprise"], "Extra inputs"),
]


@pytest.mark.parametrize(("path", "value", "loc", "message"), BAD, ids=[b[3][:30] for b in BAD])
def test_bad_input_is_422_naming_the_field_and_stores_nothing(
    client: TestClient, path: list[str], value: Any, loc: list[str], message: str
) -> None:
    before = _count(client)
    r = client.post("/v1/jobs", json=_with(path, value))
    assert r.status_code == 422, r.text
    errors = r.json()["detail"]
    assert any(e["loc"] == loc and message in e["msg"] for e in errors), errors
    assert _count(client) == before


def test_malformed_json_is_422_and_stores_nothing(client: TestClient) -> None:
    r = client.post(
        "/v1/jobs", content=b'{"dataset": "digits",', headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert "JSON" in json.dumps(r.json()["detail"])
    assert _count(client) == 0


def test_missing_required_fields_are_named(client: TestClient) -> None:
    r = client.post("/v1/jobs", json={"dataset": "digits"})
    assert r.status_code == 422
    missing = {tuple(e["loc"]) for e in r.json()["detail"] if e["type"] == "missing"}
    assert {("body", "space"), ("body", "profiles"), ("body", "budget")} <= missing


def test_catalog_endpoints(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    profiles = client.get("/v1/profiles").json()["data"]
    local = next(p for p in profiles if p["name"] == "x86/local")
    assert local["reachable"] is True and local["target"]["kind"] == "llvm"
    spaces = {s["name"]: s for s in client.get("/v1/spaces").json()["data"]}
    assert {"cnn_small", "mlp_small", "small_joint"} <= set(spaces)
    wbits = spaces["small_joint"]["overrides_schema"]["properties"]["wbits"]
    enum = wbits["oneOf"][0]["items"]["enum"]
    assert wbits["default"] == ["ternary", 4, 8, 32]
    assert set(enum) == {"binary", "ternary", 2, 4, 8, 16, 32}
    props = spaces["cnn_joint"]["overrides_schema"]["properties"]
    for dim in ("codebook_bits", "sparsity", "kd_alpha", "kd_temperature", "kd_relation"):
        assert dim in props, dim  # every toolbox technique is a dimension the API lists
    assert 0 in props["codebook_bits"]["oneOf"][0]["items"]["enum"]  # 0 = off
    datasets = {d["name"]: d for d in client.get("/v1/datasets").json()["data"]}
    assert datasets["digits"]["input_shape"] == [1, 8, 8]


def test_openapi_lists_the_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for p in (
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/cancel",
        "/v1/jobs/{job_id}/trials",
        "/v1/jobs/{job_id}/pareto",
        "/v1/models/{model_id}",
        "/v1/profiles",
        "/v1/spaces",
        "/healthz",
    ):
        assert p in paths


def test_extend_report_and_warm_start_refusals(client: TestClient) -> None:
    job = client.post("/v1/jobs", json=DEMO).json()
    r = client.post(f"/v1/jobs/{job['id']}/extend", json={"trials": 4})
    assert r.status_code == 409 and "only an ended job" in r.json()["detail"]
    client.post(f"/v1/jobs/{job['id']}/cancel")  # queued -> cancelled at once
    r = client.post(f"/v1/jobs/{job['id']}/extend", json={"trials": 4, "tune_s": 60})
    assert r.status_code == 200, r.text
    extended = r.json()
    assert extended["status"] == "queued" and extended["progress"]["budget"] == 4
    assert extended["spec"]["budget"]["tune_s"] == DEMO["budget"]["tune_s"] + 60
    bad = client.post(f"/v1/jobs/{job['id']}/extend", json={"trials": 0})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "trials"]
    report = client.get(f"/v1/jobs/{job['id']}/report").json()
    assert report["trials"] == {} and report["cache"]["probe"]["hit_rate"] is None
    assert client.get("/v1/jobs/999/report").status_code == 404

    r = client.post("/v1/jobs", json={**DEMO, "warm_start_from": 999})
    assert r.status_code == 404 and "warm_start_from: job 999" in r.json()["detail"]
    r = client.post("/v1/jobs", json={**DEMO, "warm_start_from": job["id"]})
    assert r.status_code == 409 and "no complete trials" in r.json()["detail"]
    other_space = "small_joint" if DEMO["space"] != "small_joint" else "mlp_small"
    other = {**DEMO, "space": other_space, "space_overrides": {}, "warm_start_from": job["id"]}
    r = client.post("/v1/jobs", json=other)
    assert r.status_code == 409 and f"searched space '{DEMO['space']}'" in r.json()["detail"]
    assert _count(client) == 1  # nothing refused was stored


def test_extend_past_the_budget_bounds_is_422_and_changes_nothing(client: TestClient) -> None:
    """The grown budget is checked like a submitted one (a stored budget over its bounds
    once stopped every scheduler that claimed the job)."""
    job = client.post("/v1/jobs", json=DEMO).json()
    client.post(f"/v1/jobs/{job['id']}/cancel")
    r = client.post(f"/v1/jobs/{job['id']}/extend", json={"trials": 1, "tune_s": 86_400})
    assert r.status_code == 422, r.text
    (err,) = r.json()["detail"]
    assert err["loc"] == ["body", "tune_s"] and "86400" in err["msg"]
    r = client.post(f"/v1/jobs/{job['id']}/extend", json={"trials": 1, "tune_s": False})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "tune_s"]
    after = client.get(f"/v1/jobs/{job['id']}").json()
    assert after["status"] == "cancelled" and after["spec"]["budget"] == job["spec"]["budget"]


def test_profiles_named_by_objectives_and_constraints_are_measured(client: TestClient) -> None:
    spec = {
        **DEMO,
        "profiles": ["x86/local"],
        "objectives": ["accuracy", "latency", "latency@x86/local-2t"],
        "constraints": ["latency <= 2 ms", "size <= 200 KB"],
    }
    r = client.post("/v1/jobs", json=spec)
    assert r.status_code == 201, r.text
    stored = r.json()["spec"]
    assert stored["profiles"] == ["x86/local", "x86/local-2t"]
    assert stored["objectives"] == ["accuracy", "latency@x86/local", "latency@x86/local-2t"]
    assert stored["constraints"] == [
        "latency@x86/local <= 2 ms",
        "latency@x86/local-2t <= 2 ms",
        "size <= 200 KB",
    ]
    assert stored["schema_version"] == 1


def test_unreachable_profile_is_409_naming_it(client: TestClient) -> None:
    spec = {**DEMO, "constraints": ["size <= 200 KB", "latency@nvidia/h100 <= 3 ms"]}
    r = client.post("/v1/jobs", json=spec)
    if r.status_code == 201:  # this host has a GPU after all
        pytest.skip("nvidia/h100 is reachable here")
    assert r.status_code == 409
    assert "profiles[1]: profile 'nvidia/h100' is not reachable" in r.json()["detail"]
    assert _count(client) == 0
