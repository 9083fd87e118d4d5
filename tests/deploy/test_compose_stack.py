"""The docker-compose stack runs a job end to end (``make compose-test``).

Builds the images from Debian's packages (scripts/build-images.sh; the base is cached), brings
the stack up with 2 Ray workers of 1 CPU, makes an account and a token over the API, submits a
4-trial digits job, waits for it to succeed, pulls the best model and scores it here, outside
the stack, with plain PyTorch and ONNX Runtime (examples/load_bundle.py). On the way it checks
what a deployer relies on: the scheduler is a Ray node with no CPUs, the database role is not a
superuser, the read-only role can read but not write, the API's dashboard answers a token and
refuses a request without one, and the ARM
profiles' tracker is reachable from the scheduler. Everything is torn down, volumes included.
Where dockerd can't run, the test is skipped with the reason.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.deploy.stack import REPO, Dockerd, Stack

pytestmark = pytest.mark.slow

JOB = {
    "name": "compose-stack",
    "dataset": "digits",
    "space": "small_joint",
    "space_overrides": {"cnn.depth": [1, 2], "mlp.depth": [1, 2]},
    "profiles": ["x86/local"],
    "objectives": ["accuracy", "latency@x86/local", "size"],
    "budget": {"trials": 4, "tune_s": 120},
    "training": {"epochs": 8, "finetune_epochs": 2},
    "seed": 5,
}
JOB_DEADLINE_S = 1200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    daemon = Dockerd(tmp_path_factory.mktemp("dockerd") / "dockerd.log")
    reason = daemon.start()
    if reason is not None:
        pytest.skip(f"compose stack test skipped: {reason}")
    try:
        yield
    finally:
        daemon.stop()


def _ray_secret(tmp: Path) -> Path:
    """A Ray token file for the stack, readable by the containers' user (uid 1000) only."""
    path = tmp / "ray_token"
    path.write_text(secrets.token_hex(32) + "\n")
    path.chmod(0o600)
    if os.geteuid() == 0:
        os.chown(path, 1000, 1000)
    else:
        path.chmod(0o644)  # not root: the containers' uid can't own it; a throwaway token
    return path


def _wait(client: httpx.Client, path: str, timeout_s: float, stack: Stack) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            r = client.get(path)
            if r.status_code == 200:
                return r
            last = f"{r.status_code} {r.text[:300]}"
        except httpx.TransportError as e:
            last = repr(e)
        time.sleep(3)
    raise AssertionError(f"GET {path}: {last} after {timeout_s:.0f} s\n{stack.logs()}")


def _exec(stack: Stack, service: str, *cmd: str, env: dict[str, str] | None = None) -> str:
    flags = [x for k, v in (env or {}).items() for x in ("-e", f"{k}={v}")]
    return stack.compose("exec", "-T", *flags, service, *cmd, timeout=120)


def _psql(stack: Stack, user: str, password: str, sql: str) -> subprocess.CompletedProcess[str]:
    """``sql`` as ``user`` over TCP inside the postgres container (scram-sha-256, as the
    services log in); the password goes in by environment."""
    return stack.run(
        "exec", "-T", "-e", f"PGPASSWORD={password}", "postgres",
        "psql", "-h", "127.0.0.1", "-U", user, "-d", "hwnas", "-Atc", sql,
    )  # fmt: skip


def test_stack_runs_a_job(dockerd: None, tmp_path: Path) -> None:
    build = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-images.sh")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=2400,
        check=False,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    admin = secrets.token_urlsafe(32)
    pg_password = secrets.token_urlsafe(24)
    api_port = _free_port()
    env = {
        **os.environ,
        "HWNAS_PG_PASSWORD": pg_password,
        "HWNAS_DASHBOARD_PG_PASSWORD": secrets.token_urlsafe(24),
        "HWNAS_ADMIN_TOKEN": admin,
        "HWNAS_API_PORT": str(api_port),
        "HWNAS_RAY_DASHBOARD_PORT": str(_free_port()),
        "HWNAS_RPC_TRACKER_PORT": str(_free_port()),
        "HWNAS_RAY_WORKER_CPUS": "1",
        "HWNAS_VERIFY_TUNE_S": "60",
        "HWNAS_RAY_TOKEN_FILE": str(_ray_secret(tmp_path)),
    }
    stack = Stack(f"hwnastest{os.getpid()}", env)
    t0 = time.monotonic()
    try:
        stack.compose("up", "-d", "--scale", "ray-worker=2", timeout=900)
        base = f"http://127.0.0.1:{api_port}"
        with httpx.Client(base_url=base, timeout=60) as anon:
            _wait(anon, "/healthz", 300, stack)
            ready = _wait(anon, "/readyz", 300, stack).json()
        with httpx.Client(
            base_url=base, timeout=60, headers={"Authorization": f"Bearer {admin}"}
        ) as root:
            user = root.post("/v1/users", json={"name": "compose-test"})
            assert user.status_code == 201, user.text
            tok = root.post(f"/v1/users/{user.json()['id']}/tokens", json={"name": "stack test"})
            assert tok.status_code == 201, tok.text
        token = tok.json()["token"]
        with httpx.Client(
            base_url=base, timeout=60, headers={"Authorization": f"Bearer {token}"}
        ) as client:
            r = client.post("/v1/jobs", json=JOB)
            assert r.status_code == 201, r.text
            job_id = r.json()["id"]
            deadline = time.monotonic() + JOB_DEADLINE_S
            job = r.json()
            while job["status"] not in ("succeeded", "failed", "cancelled"):
                assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
                time.sleep(5)
                job = client.get(f"/v1/jobs/{job_id}").json()
            assert job["status"] == "succeeded", f"{job}\n{stack.logs(200)}"
            trials = client.get(f"/v1/jobs/{job_id}/trials", params={"limit": 100}).json()["data"]
            nodes = client.get(f"/v1/jobs/{job_id}/report").json()["nodes"]
            best = client.get(f"/v1/jobs/{job_id}/best", params={"by": "accuracy"}).json()
            pareto = client.get(f"/v1/jobs/{job_id}/pareto").json()["data"]
            model = client.get(f"/v1/models/{best['model_id']}")
            assert model.status_code == 200, model.text
        bundle = tmp_path / "bundle"
        zipfile.ZipFile(io.BytesIO(model.content)).extractall(bundle)
        scored = subprocess.run(  # this host's Python: outside the stack, without hwnas
            [sys.executable, str(REPO / "examples" / "load_bundle.py"), str(bundle)],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        scores = json.loads(scored.stdout.strip().splitlines()[-1])
        card = json.loads((bundle / "card.json").read_text())

        # what a deployer relies on, checked inside the running stack
        owner = _psql(
            stack,
            "hwnas",
            pg_password,
            "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = 'hwnas'",
        )
        assert owner.returncode == 0 and owner.stdout.strip() == "f|f|f", owner
        dash_pw = env["HWNAS_DASHBOARD_PG_PASSWORD"]
        read = _psql(stack, "hwnas_dashboard", dash_pw, "SELECT count(*) FROM trials")
        assert read.returncode == 0 and int(read.stdout.strip()) >= 4, read
        write = _psql(stack, "hwnas_dashboard", dash_pw, "DELETE FROM trials")
        assert write.returncode != 0 and "permission denied" in write.stderr, write
        auth = {"Authorization": f"Bearer {token}"}
        studies = httpx.get(f"{base}/api/studies", headers=auth)  # the API's dashboard
        assert studies.status_code == 200 and f"job-{job_id}" in studies.text, studies.text[:500]
        assert httpx.get(f"{base}/api/studies").status_code == 401  # never without a token
        tracker = _exec(
            stack,
            "scheduler",
            "python3",
            "-c",
            "import os; from tvm import rpc; h, p = os.environ['HWNAS_RPC_TRACKER'].split(':');"
            " print(rpc.connect_tracker(h, int(p)).text_summary())",
        )
        assert "Queue Status" in tracker, tracker
        # trials ran on the two workers' CPUs alone: the head and the scheduler's node have none
        raylet = _exec(stack, "ray-head", "ray", "status")
        assert "/2.0 CPU" in raylet, raylet
    except BaseException:
        print(stack.logs(200))
        raise
    finally:
        stack.down()

    assert len(nodes) == 2 and sum(nodes.values()) >= 4, nodes  # both workers ran trials
    # tuned on the shared tuning volume, as uid 1000 (a permission error would fail the trial)
    assert all(p["latency_tuning"] == {"x86/local": "metaschedule"} for p in pareto), pareto
    test_acc = scores["torchscript_accuracy"]
    assert abs(test_acc - card["metrics"]["test_accuracy"]) <= 0.002, (scores, card["metrics"])
    assert abs(scores["onnx_accuracy"] - test_acc) <= 0.002, scores
    print(
        f"compose stack: job succeeded (job {job_id}, {len(trials)} trials on Ray nodes "
        f"{nodes}; readyz {ready}; best model {best['model_id']} scored "
        f"outside the stack: TorchScript {test_acc:.3f}, ONNX Runtime "
        f"{scores['onnx_accuracy']:.3f} on {scores['test_images']} test images, card "
        f"{card['metrics']['test_accuracy']:.3f}; {time.monotonic() - t0:.0f} s up to down)"
    )
