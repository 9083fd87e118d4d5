"""docker-compose.yml validates, requires its secrets, builds on no Docker Hub image and keeps
every published port on loopback (the stack itself runs in test_compose_stack.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
EXPECTED_SERVICES = {
    "postgres",
    "migrate",
    "api",
    "scheduler",
    "ray-head",
    "ray-worker",
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
    """The file as docker-compose resolves it (variables filled in with dummy secrets)."""
    env = {**os.environ, **{k: f"dummy-{k.lower()}" for k in SECRETS}}
    done = _config(_docker_compose(), env, quiet=False)
    assert done.returncode == 0, done.stderr
    data = yaml.safe_load(done.stdout)
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


def _config(exe: str, env: dict[str, str], quiet: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [exe, "-f", str(COMPOSE_FILE), "config", *(["-q"] if quiet else [])],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


SECRETS = ("HWNAS_PG_PASSWORD", "HWNAS_DASHBOARD_PG_PASSWORD", "HWNAS_ADMIN_TOKEN")


def test_compose_config_requires_every_secret() -> None:
    exe = _docker_compose()
    base = {k: v for k, v in os.environ.items() if k not in SECRETS}
    dummies = {k: f"dummy-{k.lower()}-for-validation" for k in SECRETS}
    for missing in SECRETS:  # each one alone missing: refused, naming it
        env = {**base, **{k: v for k, v in dummies.items() if k != missing}}
        refused = _config(exe, env)
        assert refused.returncode != 0 and missing in refused.stderr, (missing, refused.stderr)
    proc = _config(exe, {**base, **dummies})
    assert proc.returncode == 0, proc.stderr


def test_no_default_password_and_no_docker_hub_image() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert "PASSWORD:-" not in text and "change-me" not in text
    for name, svc in _load_compose()["services"].items():
        image = svc.get("image", "")
        assert image.split(":")[0] in ("hwnas", "hwnas-postgres"), (name, image)


def test_no_service_serves_the_dashboard_without_accounts() -> None:
    """The Optuna dashboard is the API's (/dashboard/, behind tokens); the database keeps a
    SELECT-only role for read-only tools."""
    services = _load_compose()["services"]
    assert not [n for n, svc in services.items() if "dashboard" in str(svc.get("command", ""))]
    init = (REPO / "deploy" / "postgres-entrypoint.sh").read_text(encoding="utf-8")
    assert "GRANT SELECT ON TABLES TO hwnas_dashboard" in init
    assert "CREATE ROLE hwnas LOGIN NOSUPERUSER" in init


def test_arm_profiles_reach_the_compose_tracker() -> None:
    services = _load_compose()["services"]
    for name in ("scheduler", "ray-worker"):
        assert services[name]["environment"]["HWNAS_RPC_TRACKER"] == "rpc-tracker:9190", name


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
