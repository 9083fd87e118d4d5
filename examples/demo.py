"""End-to-end demo of hwnas on the embedded default, driven over REST like any user.

Starts ``hwnas serve`` on 127.0.0.1 with a fresh admin token, creates a ``demo`` account and a
token for it over the API, then as that account, with the ``hwnas`` CLI: ``hwnas submit``
examples/demo-job.json, ``hwnas watch`` (each trial's stage and the ETA), ``hwnas pull``. Prints the
Pareto front, downloads the most accurate Pareto model over the API, scores it with plain
PyTorch and ONNX Runtime in a separate process (examples/load_bundle.py, no hwnas import), times
every front point's TVM library against ONNX Runtime on its own model.onnx (examples/tvm_vs_ort.py),
writes
hwnas-out/summary.json and the demo account's token (hwnas-out/demo-token, for the dashboard at
/dashboard/ of ``make serve``). Stops the server it started.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "hwnas-out"
JOB_FILE = ROOT / "examples" / "demo-job.json"
DEADLINE_S = 30 * 60  # the search, then the front verified (canary built once per host)
console = Console(width=max(120, Console().width))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = open(OUT / "serve.log", "wb")  # noqa: SIM115 - lives as long as the server
    cmd = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


def wait_healthy(client: httpx.Client, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"hwnas serve exited with {proc.returncode}; see {OUT / 'serve.log'}")
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit("hwnas serve did not become healthy in time")


HWNAS = [sys.executable, "-m", "service.cli"]


def hwnas(argv: list[str], env: dict[str, str], *, capture: bool = False) -> str:
    """Run the hwnas CLI; its output when ``capture``."""
    done = subprocess.run(
        [*HWNAS, *argv], env=env, cwd=ROOT, text=True, capture_output=capture, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"hwnas {' '.join(argv)} failed ({done.returncode}): {done.stderr}")
    return done.stdout or ""


def demo_token(admin: httpx.Client) -> str:
    """The ``demo`` account's new token (the account is created on the first run)."""
    r = admin.post("/v1/users", json={"name": "demo"})
    if r.status_code == 409:  # an earlier demo made it
        users = admin.get("/v1/users", params={"limit": 1000}).json()["data"]
        user_id = next(u["id"] for u in users if u["name"] == "demo")
    else:
        r.raise_for_status()
        user_id = r.json()["id"]
    r = admin.post(f"/v1/users/{user_id}/tokens", json={"name": "make demo", "expires_in_days": 1})
    r.raise_for_status()
    return str(r.json()["token"])


def show_pareto(points: list[dict]) -> None:
    table = Table(
        title="Pareto front (accuracy = validation; latency: the shipped TVM library, "
        "verified after the job in a fresh process)"
    )
    for col in (
        "trial",
        "val acc",
        "test acc",
        "latency ms",
        "search ms",
        "x dense",
        "size KB",
        "architecture / bits / prune / rank",
    ):
        table.add_column(col, justify="left" if col.startswith("arch") else "right")
    for p in points:
        lat = ", ".join(
            f"{v:.4f}{'' if p['latency_source'].get(k) == 'verified' else ' (search)'}"
            for k, v in p["latency_ms"].items()
        )
        search = ", ".join(f"{v:.4f}" for v in p["latency_search_ms"].values())
        speed = ", ".join(
            "-" if v is None else f"{v:.2f}{' (no speedup)' if p['no_speedup'].get(k) else ''}"
            for k, v in p["speedup_vs_dense"].items()
        )
        table.add_row(
            str(p["trial"]),
            f"{p['accuracy']:.3f}",
            f"{p['test_accuracy']:.3f}",
            lat,
            search,
            speed or "-",
            f"{p['size_bytes'] / 1024:.2f}",
            p["summary"],
        )
    console.print(table)


def main() -> int:
    OUT.mkdir(exist_ok=True)
    db = ROOT / "hwnas-data" / "hwnas.db"
    admin_token = secrets.token_urlsafe(32)  # this server's admin, for this run only
    env = {
        **os.environ,
        "HWNAS_DATABASE_URL": f"sqlite:///{db}",
        "HWNAS_ARTIFACT_DIR": str(ROOT / "hwnas-data" / "artifacts"),
        "HWNAS_ADMIN_TOKEN": admin_token,
        # finishing the front's partly tuned libraries before verification: bounded so the
        # demo stays under 15 minutes (a point still partial is labelled, not hidden)
        "HWNAS_VERIFY_TUNE_S": os.environ.get("HWNAS_VERIFY_TUNE_S", "150"),
    }
    port = free_port()
    t0 = time.monotonic()
    proc = start_server(port, env)
    console.print(
        f"hwnas serve started (pid {proc.pid}) on http://127.0.0.1:{port}; log {OUT / 'serve.log'}"
    )
    try:
        base = f"http://127.0.0.1:{port}"
        admin = httpx.Client(
            base_url=base, timeout=60, headers={"Authorization": f"Bearer {admin_token}"}
        )
        wait_healthy(admin, proc)
        token = demo_token(admin)
        admin.close()
        console.print("created a token for the account 'demo' (POST /v1/users/{id}/tokens)")
        # the rest as a user does it from any host: the hwnas CLI, with the URL and token in
        # the environment
        cli_env = {**os.environ, "HWNAS_URL": base, "HWNAS_TOKEN": token}
        spec = json.loads(JOB_FILE.read_text())
        job_id = int(hwnas(["submit", str(JOB_FILE)], cli_env, capture=True).strip())
        console.print(
            f"hwnas submit {JOB_FILE.name}: job {job_id}, {spec['budget']['trials']} trials "
            f"of {spec['space']} on {spec['dataset']} for {spec['profiles']}; hwnas watch {job_id}:"
        )
        try:  # the progress bar: each running trial's stage and the ETA
            watched = subprocess.run(
                [*HWNAS, "watch", str(job_id)], env=cli_env, cwd=ROOT, timeout=DEADLINE_S
            )
        except subprocess.TimeoutExpired:
            httpx.post(
                f"{base}/v1/jobs/{job_id}/cancel", headers={"Authorization": f"Bearer {token}"}
            )
            raise SystemExit(
                f"job {job_id} did not finish within {DEADLINE_S} s; cancelled"
            ) from None
        with httpx.Client(
            base_url=base, timeout=60, headers={"Authorization": f"Bearer {token}"}
        ) as client:
            job = client.get(f"/v1/jobs/{job_id}").json()
            if watched.returncode != 0 or job["status"] != "succeeded":
                raise SystemExit(f"job {job_id} ended {job['status']}: {job['error']}")
            pareto = client.get(f"/v1/jobs/{job_id}/pareto").json()["data"]
            show_pareto(pareto)
            best = client.get(f"/v1/jobs/{job_id}/best", params={"by": "accuracy"}).json()
        bundle = OUT / f"model-{best['model_id']}"
        pulled = hwnas(["pull", best["model_id"], "-o", str(bundle)], cli_env, capture=True)
        console.print(f"hwnas pull {best['model_id']} (trial {best['trial']}): {pulled.strip()}")
        front_dirs = []  # every front point, to time its TVM library against ONNX Runtime
        for p in pareto:
            if p["model_id"]:
                d = OUT / f"model-{p['model_id']}"
                if not d.is_dir():
                    hwnas(["pull", p["model_id"], "-o", str(d)], cli_env, capture=True)
                front_dirs.append(str(d))
        console.print(f"the report: {base}/v1/jobs/{job_id}/report.html (with the token)")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    loaded = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "load_bundle.py"), str(bundle)],
        capture_output=True,
        text=True,
        check=True,
    )
    scores = json.loads(loaded.stdout.strip().splitlines()[-1])
    console.print(
        "loaded back without hwnas: TorchScript test accuracy "
        f"{scores['torchscript_accuracy']:.3f}, "
        f"ONNX Runtime {scores['onnx_accuracy']:.3f} on {scores['test_images']} test images "
        f"(max logit diff {scores['max_abs_logit_diff']:.2e})"
    )
    vs_ort = json.loads(
        subprocess.run(
            [sys.executable, str(ROOT / "examples" / "tvm_vs_ort.py"), *front_dirs],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    console.print(
        f"each front point's TVM library against ONNX Runtime on its model.onnx (interleaved, "
        f"1 thread): median {vs_ort['median_tvm_over_ort']:.2f}x, worst "
        f"{vs_ort['worst_tvm_over_ort']:.2f}x ORT's latency (goal: each <= 1.10, median <= 1.0)"
    )
    summary = {
        "job_id": job_id,
        "tvm_vs_ort": vs_ort,
        "pareto": [
            {
                "trial": p["trial"],
                "accuracy": p["accuracy"],
                "test_accuracy": p["test_accuracy"],
                "latency_ms": p["latency_ms"],
                "latency_source": p["latency_source"],
                "latency_search_ms": p["latency_search_ms"],
                "speedup_vs_dense": p["speedup_vs_dense"],
                "no_speedup": p["no_speedup"],
                "file_scores": p["file_scores"],
                "latency_tuning": p["latency_tuning"],
                "latency_partial": p.get("latency_partial"),
                "int8_dot": p.get("int8_dot"),
                "size_bytes": p["size_bytes"],
                "candidate": p["candidate"],
                "model_id": p["model_id"],
            }
            for p in pareto
        ],
        "best_model_id": best["model_id"],
        "bundle_dir": str(bundle),
        "loaded_back": scores,
        "wall_s": round(time.monotonic() - t0, 1),
    }
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2))
    console.print(f"wrote {OUT / 'summary.json'} ({summary['wall_s']} s in all)")
    token_file = OUT / "demo-token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    console.print(
        "See the Pareto front in the Optuna dashboard: `make serve` (the same database), open "
        f"http://127.0.0.1:8000/dashboard/ and sign in with the demo account's token in "
        f"{token_file} (study 'job-{job_id}'; `hwnas --help` lists what else the CLI does)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
