"""/v1/users, /v1/tokens: accounts and their API tokens.

An admin creates accounts and tokens for anyone; an account reads itself and manages its own
tokens. A token's secret is shown once, at creation, and stored only as a hash. Another
account's tokens answer 404.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response, status
from sqlalchemy import func, select

from service.api.deps import AdminUser, CurrentUser, SessionDep, SettingsDep, client_of
from service.api.errors import conflict, not_found, responses
from service.api.routing import ReleasingRoute
from service.db import accounts
from service.db.models import ApiToken, User, utcnow
from service.schemas import (
    TokenCreate,
    TokenCreated,
    TokenPublic,
    TokensPublic,
    Usage,
    UserCreate,
    UserPublic,
    UsersPublic,
    UserUpdate,
)
from service.schemas.spec import MAX_ID
from service.settings import Settings

router = APIRouter(tags=["accounts"], route_class=ReleasingRoute)
UserId = Annotated[int, Path(ge=1, le=MAX_ID)]
TokenId = Annotated[int, Path(ge=1, le=MAX_ID)]


def user_public(session: SessionDep, settings: Settings, user: User) -> UserPublic:
    used = accounts.usage(session=session, user_id=user.id, settings=settings)
    return UserPublic(
        id=user.id,
        name=user.name,
        is_admin=user.is_admin,
        quota_exempt=user.quota_exempt,
        quotas=accounts.quotas(user, settings),
        usage=Usage(**used),
        created_at=user.created_at,
        disabled_at=user.disabled_at,
    )


def token_public(t: ApiToken) -> TokenPublic:
    return TokenPublic.model_validate(t, from_attributes=True)


def _user_or_404(session: SessionDep, user_id: int, caller: User) -> User:
    """Account ``user_id`` if the caller may manage it (itself, or an admin)."""
    user = session.get(User, user_id)
    if user is None or (user.id != caller.id and not caller.is_admin):
        raise not_found(f"user {user_id}")
    return user


@router.post("/v1/users", status_code=status.HTTP_201_CREATED, responses=responses(403, 409))
def create_user(
    body: UserCreate,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    admin: AdminUser,
) -> UserPublic:
    """Create an account (admin only); give it a token with POST /v1/users/{id}/tokens."""
    if session.scalar(select(User.id).where(User.name == body.name)) is not None:
        raise conflict(f"user {body.name!r} already exists")
    user = User(**body.model_dump())
    session.add(user)
    session.flush()
    accounts.audit(
        session=session,
        user=admin,
        action="user.create",
        target=f"user {user.id}",
        detail=body.model_dump(),
        client=client_of(request),
    )
    session.commit()
    return user_public(session, settings, user)


@router.get("/v1/users", responses=responses(403))
def list_users(
    session: SessionDep,
    settings: SettingsDep,
    admin: AdminUser,
    skip: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> UsersPublic:
    """Every account with its quotas and usage (admin only)."""
    count = session.scalar(select(func.count()).select_from(User)) or 0
    users = session.scalars(select(User).order_by(User.id).offset(skip).limit(limit)).all()
    data = [user_public(session, settings, u) for u in users]
    return UsersPublic.of(data, count, skip, limit)


@router.get("/v1/me", responses=responses())
def whoami(session: SessionDep, settings: SettingsDep, user: CurrentUser) -> UserPublic:
    """The account of your token, its quotas and what it uses of them."""
    return user_public(session, settings, user)


@router.patch("/v1/users/{user_id}", responses=responses(403, 404, 409))
def update_user(
    user_id: UserId,
    body: UserUpdate,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    admin: AdminUser,
) -> UserPublic:
    """Change an account's quotas, exemption, or disable it (admin only)."""
    user = _user_or_404(session, user_id, admin)
    changes = body.model_dump(exclude_unset=True)
    for key in ("max_active_jobs", "max_active_trials", "max_storage_bytes", "quota_exempt"):
        if key in changes and (changes[key] is not None or key != "quota_exempt"):
            setattr(user, key, changes[key])
    if changes.get("disabled") is not None:
        if user.is_admin and user.name == "admin" and changes["disabled"]:
            raise conflict("the admin account cannot be disabled")
        user.disabled_at = utcnow() if changes["disabled"] else None
    accounts.audit(
        session=session,
        user=admin,
        action="user.update",
        target=f"user {user.id}",
        detail=changes,
        client=client_of(request),
    )
    session.commit()
    return user_public(session, settings, user)


@router.post(
    "/v1/users/{user_id}/tokens",
    status_code=status.HTTP_201_CREATED,
    responses=responses(404),
)
def create_token(
    user_id: UserId,
    body: TokenCreate,
    request: Request,
    session: SessionDep,
    caller: CurrentUser,
) -> TokenCreated:
    """A new API token for an account (yours, or any as admin). The secret is in this answer
    only; keep it."""
    user = _user_or_404(session, user_id, caller)
    token, secret = accounts.create_token(
        session=session,
        user=user,
        name=body.name,
        expires_in_days=body.expires_in_days,
        by=caller,
        client=client_of(request),
    )
    session.commit()
    return TokenCreated(**token_public(token).model_dump(), token=secret)


@router.get("/v1/users/{user_id}/tokens", responses=responses(404))
def list_tokens(
    user_id: UserId,
    session: SessionDep,
    caller: CurrentUser,
    skip: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> TokensPublic:
    """An account's tokens, without their secrets."""
    user = _user_or_404(session, user_id, caller)
    where = ApiToken.user_id == user.id
    count = session.scalar(select(func.count()).select_from(ApiToken).where(where)) or 0
    rows = session.scalars(
        select(ApiToken).where(where).order_by(ApiToken.id).offset(skip).limit(limit)
    ).all()
    return TokensPublic.of([token_public(t) for t in rows], count, skip, limit)


@router.delete(
    "/v1/tokens/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=responses(404),
)
def revoke_token(
    token_id: TokenId, request: Request, session: SessionDep, caller: CurrentUser
) -> Response:
    """Revoke a token (yours, or any as admin): it fails from now on. Revoking twice is a no-op."""
    token = session.get(ApiToken, token_id)
    if token is None or (token.user_id != caller.id and not caller.is_admin):
        raise not_found(f"token {token_id}")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        accounts.audit(
            session=session,
            user=caller,
            action="token.revoke",
            target=f"token {token_id}",
            detail={"user_id": token.user_id, "name": token.name},
            client=client_of(request),
        )
        session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
