"""A TestClient on the app as an admin, and accounts made over the API, for the API tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
