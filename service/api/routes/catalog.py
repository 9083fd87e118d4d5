"""/v1/profiles, /v1/spaces, /v1/datasets and /healthz: what a job may name."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import text

from hw_profiles import list_profiles
from search_spaces import get_space, list_spaces
from service.api.deps import SessionDep

router = APIRouter(tags=["catalog"])


@router.get("/v1/profiles")
def get_profiles() -> dict[str, Any]:
    """Hardware profiles with their TVM target and whether this service can measure on them."""
    data = []
    for p in list_profiles():
        reachable = p.is_local
        data.append(
            {
                **p.model_dump(mode="json"),
                "reachable": reachable,
                "reason": None if reachable else "RPC measurement is not available in this version",
            }
        )
    return {"data": data, "count": len(data)}


@router.get("/v1/spaces")
def get_spaces() -> dict[str, Any]:
    """Search spaces with their dimensions and the JSON Schema of their overrides."""
    data = [get_space(n).describe() for n in list_spaces()]
    return {"data": data, "count": len(data)}


@router.get("/healthz", tags=["health"])
def healthz(session: SessionDep) -> dict[str, str]:
    """Liveness + database check."""
    session.execute(text("SELECT 1"))
    return {"status": "ok"}
