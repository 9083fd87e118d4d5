"""The Optuna dashboard inside the API process, behind the service's accounts.

optuna-dashboard's WSGI app can only live at the root of a host (its page asks for ``/api/...``
and ``/static/...``), so this ASGI middleware takes the dashboard's paths (:data:`PATHS`) before
the API's router sees them and hands everything else on. On those paths:

- every request needs an account: ``Authorization: Bearer <token>`` as on the API, or the
  cookie that ``/dashboard/login`` sets from a token typed into its form (the page itself cannot
  send a header). Without one, pages redirect to the login form and JSON answers 401;
- only GET and HEAD reach the dashboard (creating, renaming, deleting, telling: 405);
- each account gets the dashboard over :class:`~service.dashboard.view.AccountStudies`: its own
  jobs' studies (an admin: all), read-only, named with the job's name and owner, with the
  verified latencies as numbers it can chart.
"""

from __future__ import annotations

import html
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, quote

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from service.dashboard.view import AccountStudies, Viewer
from service.settings import Settings

log = logging.getLogger("service.dashboard")

PATHS = re.compile(r"^/(?:dashboard(?:/.*)?|api/.*|static/.*|csv/.*|artifacts/.*|favicon\.ico)$")
LOGIN, LOGOUT = "/dashboard/login", "/dashboard/logout"
COOKIE = "hwnas_dashboard"
_READ = ("GET", "HEAD")
_APP_TTL_S = 60.0  # an account's dashboard app (and its caches) is rebuilt this often
_COOKIE_MAX_AGE_S = 12 * 3600

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class DashboardGate:
    """ASGI middleware serving the dashboard on :data:`PATHS` (see the module doc)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        from a2wsgi import WSGIMiddleware

        self.app = app
        self.settings = settings
        self._apps: dict[tuple[int, bool], tuple[float, WsgiApp]] = {}
        self._lock = threading.Lock()
        self._wsgi = WSGIMiddleware(self._dispatch, workers=8)  # type: ignore[arg-type]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not PATHS.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        try:
            await self._serve(scope, receive, send)
        except Exception:  # the API's handlers are inside the router: answer like them
            error_id = uuid.uuid4().hex[:12]
            log.exception("error %s on %s %s", error_id, scope["method"], scope["path"])
            body = b'{"detail": "internal error (logged on the server)", "error_id": "%s"}'
            await _send(send, 500, body % error_id.encode(), "application/json")

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"].rstrip("/") or "/", scope["method"]
        if path == LOGIN:
            await self._login(scope, receive, send)
            return
        if path == LOGOUT:
            await _redirect(send, LOGIN, cookie=f"{COOKIE}=; Max-Age=0; Path=/; HttpOnly")
            return
        if method not in _READ:
            detail = b'{"detail": "the dashboard is read-only here: change jobs with the API"}'
            await _send(send, 405, detail, "application/json", [(b"allow", b"GET, HEAD")])
            return
        token = _bearer(scope) or _cookie(scope)
        viewer = await run_in_threadpool(self._viewer, token) if token else None
        if viewer is None:
            if path == "/" or path.startswith("/dashboard"):
                target = f"{LOGIN}?next={quote(scope['path'], safe='/')}"
                await _redirect(send, target)
                return
            detail = b'{"detail": "no valid token: send Authorization: Bearer <token>"}'
            await _send(send, 401, detail, "application/json", [(b"www-authenticate", b"Bearer")])
            return
        await self._wsgi({**scope, "hwnas.viewer": viewer}, receive, send)  # type: ignore[arg-type]

    # ------------------------------------------------------------------------ accounts
    def _viewer(self, token: str) -> Viewer | None:
        from service.db.accounts import authenticate
        from service.db.session import get_sessionmaker

        with get_sessionmaker(self.settings.database_url)() as session:
            user = authenticate(session=session, secret=token, settings=self.settings)
            return None if user is None else Viewer(user.id, user.name, user.is_admin)

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        target = _safe_next(query.get("next", ["/dashboard"])[0])
        if scope["method"] != "POST":
            await _send(send, 200, _login_page(target, ""), "text/html; charset=utf-8")
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        form = parse_qs(body.decode("utf-8", "replace"))
        token = form.get("token", [""])[0].strip()
        target = _safe_next(form.get("next", [target])[0])
        viewer = await run_in_threadpool(self._viewer, token) if token else None
        if viewer is None:
            page = _login_page(target, "That token is not valid (unknown, expired or revoked).")
            await _send(send, 401, page, "text/html; charset=utf-8")
            return
        secure = "; Secure" if scope.get("scheme") == "https" else ""
        cookie = SimpleCookie()
        cookie[COOKIE] = token
        value = cookie[COOKIE].OutputString()
        attrs = f"; Path=/; HttpOnly; SameSite=Strict; Max-Age={_COOKIE_MAX_AGE_S}{secure}"
        await _redirect(send, target, cookie=value + attrs)

    # ------------------------------------------------------------------------ dashboard
    def _dispatch(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        viewer: Viewer = environ["asgi.scope"]["hwnas.viewer"]
        return self._app_for(viewer)(environ, start_response)

    def _app_for(self, viewer: Viewer) -> WsgiApp:
        key, now = (viewer.user_id, viewer.is_admin), time.monotonic()
        with self._lock:
            made = self._apps.get(key)
            if made is not None and now - made[0] < _APP_TTL_S:
                return made[1]
        import optuna_dashboard

        from service.db.session import get_sessionmaker
        from service.scheduler.study import get_storage

        url = self.settings.database_url
        view = AccountStudies(get_storage(url), get_sessionmaker(url), viewer)
        app: WsgiApp = optuna_dashboard.wsgi(view)
        with self._lock:
            self._apps = {k: v for k, v in self._apps.items() if now - v[0] < _APP_TTL_S}
            self._apps[key] = (now, app)
        return app


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return dict(scope.get("headers", []))


def _bearer(scope: Scope) -> str | None:
    value = _headers(scope).get(b"authorization", b"").decode("latin-1")
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _cookie(scope: Scope) -> str | None:
    raw = _headers(scope).get(b"cookie")
    if raw is None:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw.decode("latin-1"))
    except Exception:  # a malformed Cookie header: as if none
        return None
    morsel = jar.get(COOKIE)
    return morsel.value or None if morsel is not None else None


def _safe_next(target: str) -> str:
    """Only back into the dashboard (no redirect to another host)."""
    ok = target.startswith("/dashboard") and "//" not in target and "\\" not in target
    return target if ok and target.rstrip("/") not in (LOGIN, LOGOUT) else "/dashboard"


def _login_page(target: str, error: str) -> bytes:
    e = html.escape
    note = f'<p class="error">{e(error)}</p>' if error else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hwnas dashboard: sign in</title>
<style>body {{ font-family: sans-serif; margin: 4em auto; max-width: 34em; color: #222; }}
input[type=password] {{ width: 100%; padding: 6px; }} .error {{ color: #b00; }}</style></head>
<body><h1>hwnas dashboard</h1>
<p>Sign in with an API token of your account (what <code>HWNAS_TOKEN</code> holds; make one
with <code>hwnas tokens create</code>). You will see your own jobs' studies, read-only; an
admin's token shows every account's.</p>{note}
<form method="post" action="{LOGIN}"><input type="hidden" name="next" value="{e(target)}">
<label>API token <input type="password" name="token" autocomplete="current-password"
required></label> <p><button type="submit">Sign in</button></p></form>
<p>Scripts and tools send <code>Authorization: Bearer &lt;token&gt;</code> instead.</p>
</body></html>""".encode()


async def _redirect(send: Send, location: str, cookie: str | None = None) -> None:
    headers = [(b"location", location.encode())]
    if cookie is not None:
        headers.append((b"set-cookie", cookie.encode()))
    await _send(send, 303, b"", "text/plain", headers)


async def _send(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    all_headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *(headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})
