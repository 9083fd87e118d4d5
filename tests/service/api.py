"""A TestClient on the app as an admin, accounts made over the API, and the app served live on
127.0.0.1 (uvicorn in a thread), for the API tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi.testclient import TestClient

from service.main import create_app
from service.settings import Settings

ADMIN = "test-admin-token-4f1c2b9e"


def api_settings(db_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(
        database_url=db_url, artifact_dir=tmp_path / "artifacts", admin_token=ADMIN, **overrides
    )


def admin_client(settings: Settings) -> TestClient:
    """The app, addressed as 127.0.0.1 (a trusted host) with the admin's token."""
    return TestClient(
        create_app(settings),
        base_url="http://127.0.0.1",
        headers={"Authorization": f"Bearer {ADMIN}"},
    )


def as_token(client: TestClient, token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def new_user(client: TestClient, name: str, **fields: Any) -> tuple[int, str]:
    """An account created by the admin, and a token of it."""
    r = client.post("/v1/users", json={"name": name, **fields})
    assert r.status_code == 201, r.text
    user_id = int(r.json()["id"])
    r = client.post(f"/v1/users/{user_id}/tokens", json={"name": "tests"})
    assert r.status_code == 201, r.text
    return user_id, str(r.json()["token"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def live_server(settings: Settings) -> Iterator[str]:
    """The app served by uvicorn on 127.0.0.1 in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
