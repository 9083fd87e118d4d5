"""One search job end to end: REST -> scheduler -> Ray -> training + compression + TVM probe.

Starts ``hwnas serve`` (API + scheduler with embedded Ray) on 127.0.0.1 with a private SQLite
database, runs a 6-trial job, and checks the study, the Pareto endpoint, the model bundle and the
Optuna dashboard's view of the same database. Stops every process it starts.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import optuna
import pytest
import torch

pytestmark = pytest.mark.slow

JOB = {
    "name": "e2e",
    "dataset": "digits",
    "space": "small_joint",
    "space_overrides": {"cnn.depth": [1, 2], "mlp.depth": [1, 2]},
    "profiles": ["x86/local"],
    "objectives": ["accuracy", "latency@x86/local", "size"],
    "budget": {"trials": 6, "tune_s": 600},
    "training": {"epochs": 8, "finetune_epochs": 2},
    "seed": 3,
}


ADMIN = "e2e-admin-token-0a1b2c3d4e"
AUTH: dict[str, str] = {}  # the e2e account's token, set by the server fixture


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        assert proc.poll() is None, f"process exited {proc.returncode}:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} not up after {timeout} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    tmp = tmp_path_factory.mktemp("e2e")
    db_url = f"sqlite:///{tmp / 'hwnas.db'}"
    env = {
        **os.environ,
        "HWNAS_DATABASE_URL": db_url,
        "HWNAS_ARTIFACT_DIR": str(tmp / "artifacts"),
        "HWNAS_TUNING_DIR": str(tmp / "tuning"),
        "HWNAS_PROBE_CACHE_DIR": str(tmp / "probe-cache"),
        "HWNAS_ADMIN_TOKEN": ADMIN,
    }
    port = _free_port()
    log = tmp / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_http(f"{base}/healthz", proc, log, 120)
        # the job runs as an ordinary account, with a token the admin made for it
        admin = {"Authorization": f"Bearer {ADMIN}"}
        user = httpx.post(f"{base}/v1/users", json={"name": "e2e"}, headers=admin, timeout=30)
        assert user.status_code == 201, user.text
        r = httpx.post(
            f"{base}/v1/users/{user.json()['id']}/tokens", json={}, headers=admin, timeout=30
        )
        AUTH["Authorization"] = f"Bearer {r.json()['token']}"
        yield base, db_url
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def finished_job(server: tuple[str, str]) -> dict[str, object]:
    base, _ = server
    r = httpx.post(f"{base}/v1/jobs", headers=AUTH, json=JOB, timeout=30)
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1200:
        job = httpx.get(f"{base}/v1/jobs/{job_id}", headers=AUTH, timeout=30).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(2)
    assert job["status"] == "succeeded", job
    assert job["progress"]["trials_complete"] == 6
    return job  # type: ignore[no-any-return]


def test_study_has_named_objectives_and_complete_metrics(
    server: tuple[str, str], finished_job: dict[str, object]
) -> None:
    _, db_url = server
    study = optuna.load_study(study_name=f"job-{finished_job['id']}", storage=db_url)
    assert len(study.directions) == 3
    assert study.metric_names == ["accuracy", "latency_ms@x86/local", "size_bytes"]
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 6
    for t in complete:
        acc, lat, size = t.values
        assert 0 < acc <= 1 and lat > 0 and size > 0
        stats = t.user_attrs["latency@x86/local"]
        assert stats["median_ms"] == lat and stats["iqr_ms"] >= 0 and stats["cv"] >= 0
        assert stats["tuning"] == "metaschedule" and isinstance(stats["partial"], bool)
        assert 0 < t.user_attrs["test_accuracy"] <= 1 and t.user_attrs["model_id"]


def test_pareto_endpoint_returns_exactly_the_non_dominated_trials(
    server: tuple[str, str], finished_job: dict[str, object]
) -> None:
    """The front after the job: verified latencies (the shipped library re-timed) replace the
    search-time ones wherever the job verified them, then the non-dominated set."""
    base, db_url = server
    job_id = finished_job["id"]
    pareto = httpx.get(f"{base}/v1/jobs/{job_id}/pareto", headers=AUTH, timeout=30).json()
    front = pareto["data"]
    assert front
    assert pareto["verification"]["status"] == "done", pareto["verification"]
    trials = httpx.get(f"{base}/v1/jobs/{job_id}/trials", headers=AUTH, timeout=30).json()["data"]

    def latency(t: dict[str, Any]) -> float:
        if t["verified"]:
            return float(t["verified"]["latency"]["x86/local"]["median_ms"])
        return float(t["metrics"]["latency_ms"]["x86/local"])

    points = {
        t["number"]: (t["metrics"]["accuracy"], latency(t), t["metrics"]["size_bytes"])
        for t in trials
        if t["state"] == "complete" and not t["metrics"]["latency_partial"]  # partial: not final
    }

    def dominates(b: tuple[float, float, int], a: tuple[float, float, int]) -> bool:
        ge = b[0] >= a[0] and b[1] <= a[1] and b[2] <= a[2]
        return ge and (b[0] > a[0] or b[1] < a[1] or b[2] < a[2])

    expected = {n for n, a in points.items() if not any(dominates(b, a) for b in points.values())}
    assert {p["trial"] for p in front} == expected
    for p in front:
        assert (p["accuracy"], p["latency_ms"]["x86/local"], p["size_bytes"]) == points[p["trial"]]
        assert p["latency_tuning"] == {"x86/local": "metaschedule"}
        assert p["latency_source"] == {"x86/local": "verified"}
        v = p["verified"]["x86/local"]
        assert v["windows"] >= 2 and v["quiet"] == "lease" and v["speedup_vs_dense"] > 0
        assert p["no_speedup"]["x86/local"] == (v["speedup_vs_dense"] < 1.05)
        assert all(f["agrees_with_card"] is not False for f in p["file_scores"].values())


def test_model_bundle_downloads_and_onnx_matches_pytorch(
    server: tuple[str, str], finished_job: dict[str, object], tmp_path: Path
) -> None:
    base, _ = server
    best = httpx.get(f"{base}/v1/jobs/{finished_job['id']}/best", headers=AUTH, timeout=30).json()
    r = httpx.get(f"{base}/v1/models/{best['model_id']}", headers=AUTH, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    zipfile.ZipFile(io.BytesIO(r.content)).extractall(tmp_path)
    for name in (
        "model.onnx",
        "model.pt",
        "card.json",
        "weights.packed.safetensors",
        "tvm/x86_local.so",
        "tvm/x86_local.canary.so",
    ):
        assert (tmp_path / name).is_file(), name
    card = json.loads((tmp_path / "card.json").read_text())
    assert card["verified"]["latency"]["x86/local"]["median_ms"] == best["latency_ms"]["x86/local"]
    shape = best["candidate"]["input_shape"]
    x = np.random.default_rng(0).random((4, *shape), dtype=np.float32)
    sess = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_out = sess.run(None, {"input": x})[0]
    with torch.no_grad():
        torch_out = torch.jit.load(str(tmp_path / "model.pt"))(torch.from_numpy(x)).numpy()
    assert onnx_out.shape == (4, 10)
    np.testing.assert_allclose(onnx_out, torch_out, atol=1e-4, rtol=0)


def test_optuna_dashboard_lists_the_study(
    server: tuple[str, str], finished_job: dict[str, object], tmp_path: Path
) -> None:
    _, db_url = server
    exe = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent))
    assert exe, "optuna-dashboard is a dependency"
    port = _free_port()
    log = tmp_path / "dashboard.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [exe, db_url, "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_http(f"http://127.0.0.1:{port}/api/studies", proc, log, 60)
        studies = httpx.get(f"http://127.0.0.1:{port}/api/studies", timeout=30).json()[
            "study_summaries"
        ]
        mine = [s for s in studies if s["study_name"] == f"job-{finished_job['id']}"]
        assert len(mine) == 1
        assert len(mine[0]["directions"]) == 3
    finally:
        _stop(proc)
