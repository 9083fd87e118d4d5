"""``hwnas serve`` for a benchmark: on a free loopback port with its own data directories,
driven over REST as the admin; jobs run to their end and Pareto bundles pulled and unpacked."""

from __future__ import annotations

import io
import os
import secrets
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx


class Service:
    """``hwnas serve`` on a free loopback port with its own data directories."""

    def __init__(self, work: Path, env: dict[str, str] | None = None) -> None:
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        env = {
            **os.environ,
            "HWNAS_DATABASE_URL": f"sqlite:///{work / 'hwnas.db'}",
            "HWNAS_ARTIFACT_DIR": str(work / "artifacts"),
            "HWNAS_TUNING_DIR": str(work / "tuning"),
            "HWNAS_PROBE_CACHE_DIR": str(work / "probe-cache"),
            "RAY_USAGE_STATS_ENABLED": "0",
            "HWNAS_ADMIN_TOKEN": secrets.token_urlsafe(32),  # this run's own, never stored
            **(env or {}),
        }
        self.env = env
        self.log = open(work / "serve.log", "wb")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1"]
        self.proc = subprocess.Popen(
            [*cmd, "--port", str(self.port)], env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        self.client = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            timeout=120,
            headers={"Authorization": f"Bearer {env['HWNAS_ADMIN_TOKEN']}"},
        )
        t0 = time.monotonic()
        while time.monotonic() - t0 < 180:
            if self.proc.poll() is not None:
                raise SystemExit(f"hwnas serve exited; see {work / 'serve.log'}")
            try:
                if self.client.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise SystemExit("hwnas serve did not start")

    def run_job(self, spec: dict[str, Any], deadline_s: float) -> dict[str, Any]:
        r = self.client.post("/v1/jobs", json=spec)
        r.raise_for_status()
        job_id = r.json()["id"]
        t0 = time.monotonic()
        while True:
            job = self.client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                break
            if time.monotonic() - t0 > deadline_s:
                self.client.post(f"/v1/jobs/{job_id}/cancel")
                raise SystemExit(f"job {job_id} ({spec['name']}) over {deadline_s} s: cancelled")
            time.sleep(5)
        if job["status"] != "succeeded":
            raise SystemExit(f"job {job_id} ended {job['status']}: {job['error']}")
        print(f"job {job_id} {spec['name']}: {time.monotonic() - t0:.0f} s", flush=True)
        return {"id": job_id, "wall_s": round(time.monotonic() - t0, 1), "job": job}

    def cli(self, *argv: str, timeout_s: float = 7200) -> str:
        """An operator's ``hwnas`` command on this service's host (its database and stores)."""
        done = subprocess.run(
            [sys.executable, "-m", "service.cli", *argv],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if done.returncode != 0:
            raise SystemExit(f"hwnas {' '.join(argv)} failed: {done.stderr[-2000:]}")
        return done.stdout

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def pull(svc: Service, job_id: int, dest: Path) -> list[dict[str, Any]]:
    """The job's Pareto points, each bundle downloaded and unpacked under ``dest``."""
    pareto = svc.client.get(f"/v1/jobs/{job_id}/pareto").json()
    points = []
    for p in pareto["data"]:
        r = svc.client.get(f"/v1/models/{p['model_id']}")
        r.raise_for_status()
        d = dest / p["model_id"]
        zipfile.ZipFile(io.BytesIO(r.content)).extractall(d)
        points.append(
            {**p, "bundle": str(d), "job_id": job_id, "verification": pareto["verification"]}
        )
    return points
