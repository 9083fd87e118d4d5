"""/v1/profiles, /v1/spaces and /healthz (open, no token): what a job may name."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import text

from hw_profiles import list_profiles
from search_spaces import get_space, list_spaces
from service.api.deps import CurrentUser, SessionDep
from service.api.errors import responses
from service.api.routing import ReleasingRoute

router = APIRouter(tags=["catalog"], route_class=ReleasingRoute)


@router.get("/v1/profiles", responses=responses())
def get_profiles(user: CurrentUser) -> dict[str, Any]:
    """Hardware profiles with their TVM target and whether this service can measure on them now.

    ``reachable`` and ``reason`` come from cheap checks cached for 30 s: this host's CPU
    architecture, its CUDA GPUs, or the RPC tracker; ``reason`` says what was found either way.
    ``int8_dot_resolved`` is the int8 dot-product path the profile's ``int8_dot`` resolves to
    on this host (``auto`` decided), or the reason a job on it is refused.
    """
    from hw_profiles.isa import Int8DotError, resolve_int8_dot
    from workers.probe.reach import reachability  # imports torch (workers.probe): on first use

    profiles = list_profiles()
    reach = reachability(profiles)
    data = []
    for p in profiles:
        ok, reason = reach[p.name]
        try:
            dot = resolve_int8_dot(p)
        except Int8DotError as e:
            dot = f"refused: {e}"
        data.append(
            {
                **p.model_dump(mode="json"),
                "reachable": ok,
                "reason": reason,
                "int8_dot_resolved": dot,
            }
        )
    return {"data": data, "count": len(data)}


@router.get("/v1/spaces", responses=responses())
def get_spaces(user: CurrentUser) -> dict[str, Any]:
    """Search spaces with their dimensions and the JSON Schema of their overrides."""
    data = [get_space(n).describe() for n in list_spaces()]
    return {"data": data, "count": len(data)}


@router.get("/healthz", tags=["health"])
def healthz(session: SessionDep) -> dict[str, str]:
    """Liveness + database check (no token needed)."""
    session.execute(text("SELECT 1"))
    return {"status": "ok"}
