"""docker-compose.yml validates and keeps every published port on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
EXPECTED_SERVICES = {
    "postgres",
    "api",
    "scheduler",
    "ray-head",
    "ray-worker",
    "optuna-dashboard",
    "rpc-tracker",
}


def _docker_compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose not on PATH (required when CI is set)")
        pytest.skip("docker-compose not on PATH")
    return exe


def _load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _published_host_ip(port: Any) -> str | None:
    """Host IP of one `ports:` entry (short or long syntax); None when it names none."""
    if isinstance(port, dict):
        if "published" not in port:
            return None  # container-only port, not published
        ip = port.get("host_ip")
        return str(ip) if ip is not None else ""
    text = str(port)
    parts = text.split(":")
    if len(parts) == 3:
        return parts[0]
    return ""  # "HOST:CONTAINER" or "CONTAINER" publishes on every interface


def _config(exe: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [exe, "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_compose_config_validates() -> None:
    exe = _docker_compose()
    env = {k: v for k, v in os.environ.items() if k != "HWNAS_PG_PASSWORD"}
    # the admin token is required: without it the file does not validate, with a dummy it does
    env.pop("HWNAS_ADMIN_TOKEN", None)
    refused = _config(exe, env)
    assert refused.returncode != 0 and "HWNAS_ADMIN_TOKEN" in refused.stderr
    env["HWNAS_ADMIN_TOKEN"] = "dummy-admin-token-for-validation"
    proc = _config(exe, env)
    assert proc.returncode == 0, proc.stderr


def test_compose_services_and_loopback_ports() -> None:
    services = _load_compose()["services"]
    assert isinstance(services, dict)
    assert EXPECTED_SERVICES <= set(services)
    published = 0
    for name, svc in services.items():
        for port in (svc or {}).get("ports", []) or []:
            ip = _published_host_ip(port)
            if ip is None:
                continue
            published += 1
            assert ip == "127.0.0.1", f"service {name!r} publishes {port!r} beyond loopback"
    assert published > 0


def test_workers_share_one_tuning_database_and_probe_cache() -> None:
    """Every process that probes reads and writes the same store, on a volume they all mount
    (a per-container ./hwnas-data would make each worker tune the same tasks again)."""
    services = _load_compose()["services"]
    for name in ("scheduler", "ray-worker", "api"):
        svc = services[name]
        env = svc["environment"]
        mounts = {str(v).split(":")[1] for v in svc.get("volumes", [])}
        for key in ("HWNAS_TUNING_DIR", "HWNAS_PROBE_CACHE_DIR"):
            assert env[key].startswith("/data/artifacts/"), (name, key)
        assert "/data/artifacts" in mounts, name
