"""Accounts: API tokens (random, stored hashed), the admin account, quotas and usage, and the
audit log. Keyword-only helpers on a caller's session; none commits unless it says so."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service.db.models import (
    ACTIVE,
    ADMIN_NAME,
    ApiToken,
    AuditEvent,
    Dataset,
    Job,
    Network,
    User,
    utcnow,
)
from service.settings import Settings

TOKEN_PREFIX = "hwnas_"
_TOUCH_S = 60.0  # last_used_at is refreshed at most this often per token


def hash_token(secret: str) -> str:
    """SHA-256 hex of a token: tokens are 256 random bits, so a fast hash is enough."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def admin_user(*, session: Session) -> User:
    """The admin account (migration 0003 creates it)."""
    user = session.scalar(select(User).where(User.name == ADMIN_NAME))
    if user is None:
        raise RuntimeError("the admin account is missing: run `hwnas migrate`")
    return user


def authenticate(*, session: Session, secret: str, settings: Settings) -> User | None:
    """The account a bearer token acts as, or None (unknown, expired, revoked, disabled)."""
    admin = settings.admin_token
    if admin is not None and hmac.compare_digest(
        secret.encode("utf-8", "surrogatepass"), admin.get_secret_value().encode()
    ):
        return admin_user(session=session)
    token = session.scalar(select(ApiToken).where(ApiToken.secret_hash == hash_token(secret)))
    now = utcnow()
    if token is None or token.revoked_at is not None:
        return None
    if token.expires_at is not None and token.expires_at <= now:
        return None
    user = token.user
    if user.disabled_at is not None:
        return None
    if token.last_used_at is None or now - token.last_used_at > timedelta(seconds=_TOUCH_S):
        token.last_used_at = now
        session.commit()
    return user


def create_token(
    *,
    session: Session,
    user: User,
    name: str,
    expires_in_days: int | None,
    by: User,
    client: str,
) -> tuple[ApiToken, str]:
    """A new token for ``user``, made by ``by`` (audited; the caller commits); returns the row
    and the secret (shown once)."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
    token = ApiToken(
        user_id=user.id,
        name=name,
        prefix=secret[:12],
        secret_hash=hash_token(secret),
        expires_at=expires,
    )
    session.add(token)
    session.flush()
    audit(
        session=session,
        user=by,
        action="token.create",
        target=f"token {token.id}",
        detail={"user": user.name, "name": name, "expires_in_days": expires_in_days},
        client=client,
    )
    return token, secret


def lock_account(*, session: Session, user_id: int) -> None:
    """Serialise the quota checks of one account: a no-op UPDATE takes its row lock on
    PostgreSQL and the write lock on SQLite until the transaction ends."""
    session.execute(update(User).where(User.id == user_id).values(name=User.name))


def quotas(user: User, settings: Settings) -> dict[str, int]:
    """The limits in force for ``user``."""
    return {
        "max_active_jobs": _or(user.max_active_jobs, settings.quota_active_jobs),
        "max_active_trials": _or(user.max_active_trials, settings.quota_active_trials),
        "max_storage_bytes": _or(user.max_storage_bytes, settings.quota_storage_bytes),
    }


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def usage(*, session: Session, user_id: int, settings: Settings) -> dict[str, int]:
    """What an account holds now: active jobs, the trials they may still ask for, and the bytes
    of its uploads (datasets and networks) and job artifacts (walked on disk: what a deleted
    job left counts until it is collected)."""
    active = session.execute(
        select(Job.id, Job.spec, Job.trials_complete).where(
            Job.owner_id == user_id, Job.status.in_(ACTIVE)
        )
    ).all()
    trials = sum(max(0, int(spec["budget"]["trials"]) - done) for _, spec, done in active)
    uploads = session.scalar(
        select(func.coalesce(func.sum(Dataset.size_bytes), 0)).where(Dataset.owner_id == user_id)
    )
    networks = session.scalar(
        select(func.coalesce(func.sum(Network.size_bytes), 0)).where(Network.owner_id == user_id)
    )
    job_ids = session.scalars(select(Job.id).where(Job.owner_id == user_id)).all()
    root = Path(settings.artifact_dir).resolve() / "jobs"
    artifacts = sum(_tree_bytes(root / str(j)) for j in job_ids)
    return {
        "active_jobs": len(active),
        "active_trials": trials,
        "storage_bytes": int(uploads or 0) + int(networks or 0) + artifacts,
    }


def _tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:  # removed while we walked
                pass
    return total


def audit(
    *,
    session: Session,
    user: User,
    action: str,
    target: str,
    detail: dict[str, Any] | None = None,
    client: str = "",
) -> None:
    """Record who did what (added to the caller's transaction, so it commits with the act)."""
    session.add(
        AuditEvent(
            user_id=user.id,
            user_name=user.name,
            action=action,
            target=target[:200],
            detail=detail or {},
            client=client[:100],
        )
    )


RATE_LIMITED = ("job.submit", "job.extend")  # each queues a job's worth of work


def recent_submits(*, session: Session, user_id: int, window_s: float) -> list[Any]:
    """Times of the account's job submissions and extensions within the last ``window_s``,
    oldest first."""
    since = utcnow() - timedelta(seconds=window_s)
    return list(
        session.scalars(
            select(AuditEvent.at)
            .where(
                AuditEvent.user_id == user_id,
                AuditEvent.action.in_(RATE_LIMITED),
                AuditEvent.at > since,
            )
            .order_by(AuditEvent.at)
        ).all()
    )
