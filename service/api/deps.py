"""FastAPI dependencies: settings, a database session, the calling account."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from service.db.accounts import authenticate
from service.db.models import User
from service.db.session import get_sessionmaker
from service.settings import Settings


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    with get_sessionmaker(settings.database_url)() as session:
        yield session


# scope="function": the session closes (its connection back to the pool) as soon as the route
# returns, not after the response is serialized, which for a sync route waits for a free
# thread: under a burst, connections held across that wait exhausted the pool (measured).
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def release(session: Session) -> None:
    """End the session's transaction, so its connection goes back to the pool before slow work
    on another pool (Optuna's storage): a thread never holds two connections at once."""
    session.commit()


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An API token (`Authorization: Bearer hwnas_...`), created by an admin with "
    "POST /v1/users/{user_id}/tokens; the admin's own is HWNAS_ADMIN_TOKEN.",
)
_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def current_user(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    """The account of the request's bearer token; 401 without a valid one."""
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token: send 'Authorization: Bearer <token>'",
            headers=_UNAUTHORIZED,
        )
    user = authenticate(session=session, secret=credentials.credentials, settings=settings)
    # the connection goes back to the pool while the request waits for a thread to run its
    # route (else a burst of requests holds every connection and waits)
    release(session)
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid token: unknown, expired or revoked, or its account is disabled",
            headers=_UNAUTHORIZED,
        )
    request.state.user = user.name
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def admin_only(user: CurrentUser) -> User:
    if not user.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this needs an admin token")
    return user


AdminUser = Annotated[User, Depends(admin_only)]


def client_of(request: Request) -> str:
    """Who called, for the audit log."""
    return request.client.host if request.client else ""
