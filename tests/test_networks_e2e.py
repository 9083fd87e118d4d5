"""Each reference architecture taken end to end as a user's model, over the API: uploaded as a
torch.export archive, a 1-trial job at 32x32 (tuning off) compressing it, its bundle re-scored
outside hwnas within 0.002 of the card by every file. Slow: real fine-tuning and TVM builds."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from service.db.models import Job, JobStatus
from service.db.queue import claim_job
from service.db.session import get_sessionmaker
from service.scheduler.controller import JobController
from tests.service.api import admin_client, api_settings, as_token, new_user
from tests.service.inline import InlineExecutor
from workers.networks import zoo

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "resnet18-cifar": lambda: zoo.resnet18(4, 0.25, "cifar"),
    "resnet18-imagenet": lambda: zoo.resnet18(4, 0.25, "imagenet"),
    "mobilenet-v2": lambda: zoo.mobilenet_v2(4, 0.35),
    "efficientnet-b0": lambda: zoo.efficientnet_b0(4, 0.25),
    "concat": lambda: zoo.ConcatNet(4),
}


def _data() -> bytes:
    """A 3x32x32 four-class task a model can learn: each class a coloured quadrant."""
    rng = np.random.default_rng(0)

    def part(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % 4
        x = rng.integers(0, 60, (n, 3, 32, 32), dtype=np.uint8)
        for i, c in enumerate(y):
            r, q = divmod(int(c), 2)
            x[i, c % 3, r * 16 : r * 16 + 16, q * 16 : q * 16 + 16] += 150
        return x, y

    buf = io.BytesIO()
    xt, yt = part(256)
    xs, ys = part(96)
    np.savez(buf, x_train=xt, y_train=yt, x_test=xs, y_test=ys)
    return buf.getvalue()


def _pt2(model: torch.nn.Module) -> bytes:
    ep = torch.export.export(
        model.eval(),
        (torch.zeros(2, 3, 32, 32),),
        dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
    )
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    return buf.getvalue()


@pytest.mark.parametrize("name", list(MODELS))
def test_a_users_model_end_to_end(name: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    settings = api_settings(url, tmp_path, verify=False, poll_interval_s=0.01)
    torch.manual_seed(0)
    data = tmp_path / "quad.npz"
    data.write_bytes(_data())
    with admin_client(settings) as c:
        _, token = new_user(c, "u")
        h = as_token(c, token)
        r = c.post("/v1/datasets", params={"name": "quad"}, content=data.read_bytes(), headers=h)
        assert r.is_success, r.text
        r = c.post("/v1/networks", params={"name": "net"}, content=_pt2(MODELS[name]()), headers=h)
        assert r.status_code == 201, r.text
        job = {
            "dataset": "user/quad",
            "space": "network",
            "network": "user/net",
            "profiles": ["x86/local"],
            "objectives": ["accuracy", "latency", "size"],
            "space_overrides": {"wbits": [8], "abits": [8], "prune": [0.25], "rank": [1.0]},
            "budget": {"trials": 1, "tune_s": 0},
            "training": {"finetune_epochs": 1, "qat_epochs": 1, "batch_size": 32},
            "tuning": "off",
            "prefilter": False,
        }
        r = c.post("/v1/jobs", json=job, headers=h)
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
    with get_sessionmaker(url)() as s:
        assert claim_job(session=s, worker_id="t", stale_after_s=60) is not None
    status = JobController(settings, InlineExecutor(set()), job_id, "t").run()
    with get_sessionmaker(url)() as s:
        row = s.get(Job, job_id)
        assert row is not None and status == JobStatus.succeeded, row.error
    with admin_client(settings) as c:
        best = c.get(f"/v1/jobs/{job_id}/best", headers=h).json()
        assert best["test_accuracy_change"] is not None
        bundle = c.get(f"/v1/models/{best['model_id']}", headers=h)
    out = tmp_path / "bundle"
    zipfile.ZipFile(io.BytesIO(bundle.content)).extractall(out)
    card = json.loads((out / "card.json").read_text())
    assert card["network"]["name"] == "user/net"
    layers = card["structure"]["layers"]
    assert any(layer["computes_as"].startswith("int8") for layer in layers)
    # re-scored outside hwnas, in a process that does not import it
    scored = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "load_bundle.py"), str(out), str(data)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    scores = json.loads(scored.stdout.strip().splitlines()[-1])
    want = card["metrics"]["test_accuracy"]
    assert abs(scores["torchscript_accuracy"] - want) <= 0.002, (scores, want)
    assert abs(scores["onnx_accuracy"] - want) <= 0.002, (scores, want)
    assert all(f["agrees_with_card"] for f in card["file_scores"].values()), card["file_scores"]
