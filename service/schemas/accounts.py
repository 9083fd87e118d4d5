"""Accounts, API tokens, quotas and the audit log as the API shows them; the error body."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from service.schemas.pages import Page
from service.schemas.spec import INTEGRAL, Int

USER_NAME = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class ErrorPublic(BaseModel):
    """Every error but a request validation error (422, whose ``detail`` is a list)."""

    detail: str
    error_id: str | None = Field(
        default=None, description="for a 500: the id under which the server logged it"
    )


class Quotas(BaseModel):
    """Limits of one account; None = the service default (``HWNAS_QUOTA_*``)."""

    model_config = _STRICT

    max_active_jobs: Annotated[int, Field(ge=0, le=10_000), INTEGRAL] | None = Field(
        default=None, description="jobs queued or running at once"
    )
    max_active_trials: Annotated[int, Field(ge=0, le=10_000_000), INTEGRAL] | None = Field(
        default=None,
        description="trials the account's queued and running jobs may ask for in all",
    )
    max_storage_bytes: Annotated[int, Field(ge=0, le=2**50), INTEGRAL] | None = Field(
        default=None,
        description="bytes of uploaded datasets and job artifacts",
    )


class UserCreate(Quotas):
    """A new account (admin only)."""

    name: str = Field(pattern=USER_NAME, examples=["alice"])
    is_admin: bool = Field(default=False, description="sees and manages every account's work")
    quota_exempt: bool = Field(
        default=False, description="no quotas and no submit rate limit (service accounts)"
    )


class UserUpdate(Quotas):
    """Change an account's quotas or disable it (admin only); absent fields stay as they are."""

    quota_exempt: bool | None = None
    disabled: bool | None = Field(default=None, description="a disabled account's tokens fail")


class Usage(BaseModel):
    active_jobs: int
    active_trials: int
    storage_bytes: int


class UserPublic(BaseModel):
    id: int
    name: str
    is_admin: bool
    quota_exempt: bool
    quotas: dict[str, int] = Field(description="the limits in force (defaults filled in)")
    usage: Usage | None = None
    created_at: datetime
    disabled_at: datetime | None


class UsersPublic(Page):
    data: list[UserPublic]


class TokenCreate(BaseModel):
    model_config = _STRICT

    name: str = Field(default="", max_length=100, pattern=r"^[^\x00-\x1f\x7f]*$")
    expires_in_days: Int = Field(default=90, ge=1, le=3650)


class TokenPublic(BaseModel):
    id: int
    user_id: int
    name: str
    prefix: str = Field(description="the token's first characters, to tell tokens apart")
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenCreated(TokenPublic):
    token: str = Field(description="the secret: shown this once, stored only as a hash")


class TokensPublic(Page):
    data: list[TokenPublic]


class AuditEventPublic(BaseModel):
    id: int
    at: datetime
    user_id: int
    user_name: str
    action: str
    target: str
    detail: dict[str, Any]
    client: str


class AuditPublic(Page):
    data: list[AuditEventPublic]
