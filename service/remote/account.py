"""Your account over HTTP: ``me`` and ``tokens list | create | revoke``.

Tokens are the caller's own: ``GET /v1/me`` gives the account's id, its tokens are at
``/v1/users/{id}/tokens``, a token is revoked with ``DELETE /v1/tokens/{token_id}``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from service.client import Client
from service.remote.base import console, print_json

_QUOTAS = (
    ("active jobs", "active_jobs", "max_active_jobs"),
    ("active trials", "active_trials", "max_active_trials"),
    ("storage", "storage_bytes", "max_storage_bytes"),
)


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # unreachable


def me(client: Client, args: argparse.Namespace) -> int:
    """GET /v1/me: the token's account, admin flag, quotas and what it uses of them."""
    user = client.json("GET", "/v1/me")
    if args.json:
        print_json(user)
        return 0
    state = f"disabled since {user['disabled_at'][:19]}" if user.get("disabled_at") else "active"
    print(
        f"{user['name']} (account {user['id']}, {state}): admin "
        f"{'yes' if user['is_admin'] else 'no'}, quota exempt "
        f"{'yes' if user['quota_exempt'] else 'no'}"
    )
    usage, quotas = user.get("usage") or {}, user.get("quotas") or {}
    for label, used_key, limit_key in _QUOTAS:
        used, limit = usage.get(used_key), quotas.get(limit_key)
        show = _bytes if used_key == "storage_bytes" else str
        cap = "no limit (exempt)" if user["quota_exempt"] else (show(limit) if limit else "-")
        print(f"  {label:<14} {show(used) if used is not None else '-'} of {cap}")
    return 0


def _my_id(client: Client) -> int:
    return int(client.json("GET", "/v1/me")["id"])


def tokens_list(client: Client, args: argparse.Namespace) -> int:
    """GET /v1/users/{me}/tokens: id, name, prefix, created, expires, last used, state."""
    page = client.json("GET", f"/v1/users/{_my_id(client)}/tokens", params={"limit": 1000})
    if args.json:
        print_json(page)
        return 0
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{page['count']} tokens")
    for col in ("id", "name", "prefix", "created", "expires", "last used", "state"):
        table.add_column(col, justify="right" if col == "id" else "left")
    for t in page["data"]:
        state = "revoked" if t.get("revoked_at") else "active"
        if client.uses_token(t["prefix"]) and state == "active":
            state += " (this one)"
        cells = (
            str(t["id"]),
            t["name"] or "-",
            t["prefix"] + "...",
            _day(t["created_at"]),
            _day(t.get("expires_at")) or "never",
            _day(t.get("last_used_at")) or "-",
            state,
        )
        table.add_row(*(Text(c) for c in cells))
    console().print(table)
    return 0


def _day(at: str | None) -> str:
    return at[:16].replace("T", " ") if at else ""


def tokens_create(client: Client, args: argparse.Namespace) -> int:
    """POST /v1/users/{me}/tokens: prints the new secret (once: keep it) on stdout."""
    body: dict[str, Any] = {"name": args.name, "expires_in_days": args.days}
    token = client.json("POST", f"/v1/users/{_my_id(client)}/tokens", json=body)
    if args.json:
        print_json(token)
        return 0
    print(token["token"], flush=True)
    print(
        f"token {token['id']}{' (' + token['name'] + ')' if token['name'] else ''} expires "
        f"{_day(token.get('expires_at')) or 'never'}; its secret is shown this once, keep it "
        "(e.g. in a file for --token-file / HWNAS_TOKEN_FILE)",
        file=sys.stderr,
    )
    return 0


def tokens_revoke(client: Client, args: argparse.Namespace) -> int:
    """DELETE /v1/tokens/{id}: it fails from now on (revoking twice is a no-op)."""
    client.request("DELETE", f"/v1/tokens/{args.token_id}")
    print(f"token {args.token_id} revoked")
    return 0
