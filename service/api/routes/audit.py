"""/v1/audit: who submitted, cancelled, extended, uploaded, created or revoked what."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import func, select

from service.api.deps import CurrentUser, SessionDep
from service.api.errors import responses
from service.api.routing import ReleasingRoute
from service.db.models import AuditEvent
from service.schemas import AuditEventPublic, AuditPublic
from service.schemas.accounts import USER_NAME
from service.schemas.spec import MAX_ID

router = APIRouter(prefix="/v1/audit", tags=["accounts"], route_class=ReleasingRoute)


@router.get("", responses=responses())
def list_audit(
    session: SessionDep,
    user: CurrentUser,
    action: Annotated[str | None, Query(pattern=r"^[a-z]+\.[a-z]+$", max_length=40)] = None,
    user_name: Annotated[
        str | None, Query(alias="user", pattern=USER_NAME, description="one account's (admin)")
    ] = None,
    skip: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPublic:
    """The audit log, newest first: your own acts (an admin: everyone's)."""
    where = []
    if not user.is_admin:
        where.append(AuditEvent.user_id == user.id)
    if action is not None:
        where.append(AuditEvent.action == action)
    if user_name is not None:
        where.append(AuditEvent.user_name == user_name)
    count = session.scalar(select(func.count()).select_from(AuditEvent).where(*where)) or 0
    rows = session.scalars(
        select(AuditEvent).where(*where).order_by(AuditEvent.id.desc()).offset(skip).limit(limit)
    ).all()
    data = [AuditEventPublic.model_validate(r, from_attributes=True) for r in rows]
    return AuditPublic.of(data, count, skip, limit)
