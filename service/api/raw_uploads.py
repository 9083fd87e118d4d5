"""What the routes taking raw uploads (a dataset, a network) share: reading a body within a
limit (413 past it, from the declared length or as it streams), the storage quota, and
deleting one (refused while an active job reads it, audited)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import HTTPException, Request, status
from sqlalchemy.orm import Session

from service.api.errors import conflict, forbidden
from service.db import accounts, crud
from service.db.models import User
from service.settings import Settings


async def read_limited(request: Request, limit: int, what: str) -> bytes:
    """The request's body, refused with 413 as soon as it is known to pass ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"{what} over {limit} bytes")
    blob = bytearray()
    async for chunk in request.stream():
        blob += chunk
        if len(blob) > limit:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"{what} over {limit} bytes")
    return bytes(blob)


def check_storage(session: Session, settings: Settings, user: User, adding: int, what: str) -> None:
    """403 naming the quota when ``adding`` bytes would take the account past its storage."""
    if user.quota_exempt:
        return
    limit = accounts.quotas(user, settings)["max_storage_bytes"]
    used = accounts.usage(session=session, user_id=user.id, settings=settings)["storage_bytes"]
    if used + adding > limit:
        raise forbidden(
            f"quota max_storage_bytes = {limit}: you hold {used} bytes, this {what} takes {adding}"
        )


def delete_upload(
    session: Session,
    user: User,
    kind: str,
    name: str,
    row: Any,
    detail: dict[str, Any],
    client: str,
    before_commit: Callable[[], None] | None = None,
) -> None:
    """Delete the account's upload ``row`` (``kind`` ``dataset`` or ``network``, the field jobs
    name it by) and audit it, in one commit; 409 naming the jobs while an active one reads it.
    ``before_commit`` runs under the account's lock, the row already deleted."""
    accounts.lock_account(session=session, user_id=user.id)  # no job of ours is submitted now
    target = f"{kind} user/{name}"
    users = crud.active_jobs_using(
        session=session, owner_id=user.id, field=kind, value=f"user/{name}"
    )
    if users:
        raise conflict(f"{target} is used by active job(s) {users}")
    session.delete(row)
    accounts.audit(
        session=session,
        user=user,
        action=f"{kind}.delete",
        target=target,
        detail=detail,
        client=client,
    )
    if before_commit is not None:
        before_commit()
    session.commit()
