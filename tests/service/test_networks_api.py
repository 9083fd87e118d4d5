"""Uploading a trained network and compressing it, over the API, on SQLite and PostgreSQL:
bad archives refused naming what is wrong, the job's space derived from the upload, a job run
end to end with the upload as the parent, everything compared with the uploaded model."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from tests.service.api import admin_client, api_settings, as_token, new_user
from workers.networks import zoo


def pt2(model: torch.nn.Module, shape: tuple[int, ...], dynamic: bool = True) -> bytes:
    """A trained-or-not model as a user exports it."""
    return zoo.export_pt2(model, shape, None if dynamic else 1)


@pytest.fixture(scope="module")
def concat_pt2() -> bytes:
    torch.manual_seed(0)
    return pt2(zoo.ConcatNet(10, in_channels=1), (1, 8, 8))


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = api_settings(db_url, tmp_path, max_network_bytes=8 << 20, verify=False)
    with admin_client(settings) as c:
        yield c


def _rewrite(blob: bytes, edit: dict[str, bytes | None]) -> bytes:
    """The archive with members replaced (None: removed), matched by suffix."""
    src = zipfile.ZipFile(io.BytesIO(blob))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as w:
        for info in src.infolist():
            hit = next((v for k, v in edit.items() if info.filename.endswith(k)), b"keep")
            if hit is None:
                continue
            w.writestr(info, src.read(info.filename) if hit == b"keep" else hit)
    return out.getvalue()


def test_upload_lists_describes_and_deletes(client: TestClient, concat_pt2: bytes) -> None:
    r = client.post("/v1/networks", params={"name": "concat"}, content=concat_pt2)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == "user/concat" and body["input_shape"] == [1, 8, 8]
    assert body["num_classes"] == 10 and body["layers"] == 5 and len(body["digest"]) == 64
    assert [g["name"] for g in body["groups"]] == ["a", "b", "mix", "res", "head"]
    assert body["ops"]["aten.cat.default"] == 1
    detail = client.get("/v1/networks/concat").json()
    assert "res.prune" in detail["space"]["parameters"]
    assert "head.prune" not in detail["space"]["parameters"]  # the classes stay
    assert [n["name"] for n in client.get("/v1/networks").json()["data"]] == ["user/concat"]
    again = client.post("/v1/networks", params={"name": "concat"}, content=concat_pt2)
    assert again.status_code == 409
    usage = client.get("/v1/me").json()["usage"]["storage_bytes"]
    assert usage >= len(concat_pt2)
    assert client.delete("/v1/networks/concat").status_code == 204
    assert client.get("/v1/networks/concat").status_code == 404


def test_bad_archives_are_refused_naming_the_problem(client: TestClient, concat_pt2: bytes) -> None:
    cfg = json.loads(
        next(
            zipfile.ZipFile(io.BytesIO(concat_pt2)).read(n)
            for n in zipfile.ZipFile(io.BytesIO(concat_pt2)).namelist()
            if n.endswith("model_weights_config.json")
        )
    )
    first = next(iter(cfg["config"]))
    cfg["config"][first]["use_pickle"] = True
    vit = pt2(zoo.TinyViT(10), (3, 32, 32))
    cases = {
        "pickled weight": (
            _rewrite(concat_pt2, {"model_weights_config.json": json.dumps(cfg).encode()}),
            f"weight {first!r} is stored as a pickle",
        ),
        "onnx": (b"\x08\x07\x12\x07pytorch" + b"onnx" * 10, "ONNX uploads are not taken"),
        "not a zip": (b"hello", "not a zip archive"),
        "no program": (_rewrite(concat_pt2, {"models/model.json": None}), "holds 0 programs"),
        "vit": (vit, "unsupported ops: aten.transpose.int (node 'transpose'"),
    }
    for what, (blob, message) in cases.items():
        r = client.post("/v1/networks", params={"name": "bad"}, content=blob)
        assert r.status_code == 422, (what, r.text)
        assert message in r.json()["detail"][0]["msg"], (what, r.text)
    big = client.post("/v1/networks", params={"name": "big"}, content=b"PK" + b"\0" * (9 << 20))
    assert big.status_code == 413
    r = client.post(
        "/v1/networks",
        params={"name": "norm", "mean": [0.5, 0.5], "std": [0.2, 0.2]},
        content=concat_pt2,
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "mean"]
    assert client.get("/v1/networks").json()["count"] == 0


def test_the_sample_inputs_pickle_is_never_read(
    client: TestClient, concat_pt2: bytes, tmp_path: Path
) -> None:
    """A pickle in data/sample_inputs that would run code when loaded: the upload is taken,
    the code never runs."""
    marker = tmp_path / "pwned"

    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (marker.write_text, ("ran",))

    import pickle

    evil = _rewrite(concat_pt2, {"sample_inputs/model.pt": pickle.dumps(Boom())})
    r = client.post("/v1/networks", params={"name": "evil"}, content=evil)
    assert r.status_code == 201, r.text
    assert not marker.exists()


def test_a_job_compresses_the_upload_against_it(db_url: str, tmp_path: Path) -> None:
    """A briefly trained model on digits, uploaded by an account, compressed by a 2-trial job
    run by the controller: the upload is the parent and the teacher, the spec records its
    digest, and every point is compared with it."""
    from service.db.models import Job, JobStatus
    from service.db.queue import claim_job
    from service.db.session import get_sessionmaker
    from service.scheduler.controller import JobController
    from tests.service.inline import InlineExecutor
    from workers.data import load_splits
    from workers.train import Recipe, fit

    torch.manual_seed(0)
    model = zoo.ConcatNet(10, in_channels=1)
    fit(model, load_splits("digits", 0).train, epochs=2, recipe=Recipe())
    settings = api_settings(db_url, tmp_path, verify=False, poll_interval_s=0.01)
    with admin_client(settings) as c:
        _, token = new_user(c, "ada")
        ada = as_token(c, token)
        r = c.post(
            "/v1/networks", params={"name": "mine"}, content=pt2(model, (1, 8, 8)), headers=ada
        )
        assert r.status_code == 201, r.text
        digest = r.json()["digest"]
        job = {
            "dataset": "digits",
            "space": "network",
            "network": "user/mine",
            "profiles": ["x86/local"],
            "objectives": ["accuracy", "size"],
            "space_overrides": {"wbits": [8], "abits": [8], "prune": [0.25], "rank": [1.0]},
            "fixed_params": {"mix.wbits": 32},
            "budget": {"trials": 2, "tune_s": 0},
            "training": {"finetune_epochs": 1, "qat_epochs": 1},
            "tuning": "off",
            "prefilter": False,
        }
        bad = c.post("/v1/jobs", json={**job, "fixed_params": {"nope.prune": 0.5}}, headers=ada)
        assert bad.status_code == 422 and "nope.prune" in bad.text
        other = c.post("/v1/jobs", json={**job, "dataset": "fashion_mnist"}, headers=ada)
        assert other.status_code == 422 and "takes [1, 8, 8] inputs" in other.text
        r = c.post("/v1/jobs", json=job, headers=ada)
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        assert r.json()["spec"]["network_digest"] == digest
        assert c.delete("/v1/networks/mine", headers=ada).status_code == 409  # in use
    with get_sessionmaker(db_url)() as s:
        assert claim_job(session=s, worker_id="t", stale_after_s=60) is not None
    status = JobController(settings, InlineExecutor(set()), job_id, "t").run()
    with get_sessionmaker(db_url)() as s:
        row = s.get(Job, job_id)
        assert row is not None and status == JobStatus.succeeded, row.error if row else None
    with admin_client(settings) as c:
        trials = c.get(f"/v1/jobs/{job_id}/trials", headers=ada).json()["data"]
        assert len(trials) == 2 and all(t["state"] == "complete" for t in trials)
        for t in trials:
            assert t["candidate"]["family"] == "network"
            assert t["candidate"]["network"] == {"name": "user/mine", "digest": digest}
            groups = {g["name"]: g for g in t["candidate"]["groups"]}
            assert groups["mix"]["wbits"] == 32 and groups["res"]["prune"] == 0.25
            m = t["metrics"]
            assert m["parent_accuracy"] > 0.5 and m["parent_test_accuracy"] > 0.5
            assert m["dense_size_bytes"] > m["size_bytes"]
        model_id = c.get(f"/v1/jobs/{job_id}/best", headers=ada).json()["model_id"]
        bundle = c.get(f"/v1/models/{model_id}", headers=ada)
        assert bundle.status_code == 200
    with zipfile.ZipFile(io.BytesIO(bundle.content)) as zf:
        card = json.loads(zf.read("card.json"))
    assert card["network"]["name"] == "user/mine" and card["network"]["sha256"] == digest
    assert card["network"]["uploaded_test_accuracy"] == pytest.approx(
        trials[0]["metrics"]["parent_test_accuracy"]
    )
    assert all(f["agrees_with_card"] for f in card["file_scores"].values()), card["file_scores"]


def test_a_normalized_network_needs_images_in_0_1(client: TestClient, concat_pt2: bytes) -> None:
    """A network that declares mean / std takes pixels in [0, 1] before normalizing: a dataset
    already holding other values is refused at submit, naming both."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(0, 2, (60, 1, 8, 8)).astype(np.float32)  # already standardized, say
    y = np.arange(60) % 10
    buf = io.BytesIO()
    np.savez(buf, x_train=x, y_train=y, x_test=x, y_test=y)
    assert client.post("/v1/datasets", params={"name": "std"}, content=buf.getvalue()).is_success
    r = client.post(
        "/v1/networks", params={"name": "n", "mean": [0.5], "std": [0.25]}, content=concat_pt2
    )
    assert r.status_code == 201, r.text
    job = {"dataset": "user/std", "space": "network", "network": "user/n",
           "profiles": ["x86/local"], "budget": {"trials": 1}}  # fmt: skip
    r = client.post("/v1/jobs", json=job)
    assert r.status_code == 422 and "holds values in [-" in r.text, r.text
    assert client.post("/v1/jobs", json={**job, "dataset": "digits"}).status_code == 201
