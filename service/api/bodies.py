"""Request bodies before any route sees them: a size limit, and JSON with finite numbers only.

Python's JSON parser (what FastAPI uses) takes ``NaN``, ``Infinity`` and ``1e400`` as floats;
such a value then fails validation and, echoed back in the 422, failed JSON encoding as a 500
(or, in a field typed ``Any``, reached the database, where PostgreSQL's JSON refuses it). So
every JSON body is read here first, bounded by ``HWNAS_MAX_JSON_BYTES`` (413 beyond), and one
holding a non-finite number is answered 422 naming where it is (``body.training.lr``). The
routes that take raw uploads (:data:`RAW_BODY_ROUTES`) bound their own bodies and are passed
through untouched.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from email.message import Message
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from service.api.quoting import quote

# (method, path) of routes whose body is not JSON and has its own limit (max_upload_bytes)
RAW_BODY_ROUTES = frozenset({("POST", "/v1/datasets"), ("POST", "/v1/networks")})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Read and dropped after a 413 so that a client still sending can read the answer (closing a
# socket with unread data resets it); beyond this much the connection is simply closed.
_DRAIN_BYTES = 256 << 20


class _NonFinite(ValueError):
    def __init__(self, literal: str) -> None:
        self.literal = literal


def _constant(literal: str) -> float:
    raise _NonFinite(literal)


def _number(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise _NonFinite(literal)
    return value


def _path_of(literal: str, text: str) -> list[str | int]:
    """Where in the document the first non-finite ``literal`` sits, as a loc list."""
    doc = json.loads(text)  # Python's parser takes NaN, Infinity and 1e400 (as inf)

    def walk(node: Any, at: list[str | int]) -> Iterator[list[str | int]]:
        if isinstance(node, float) and not math.isfinite(node):
            yield at
        elif isinstance(node, dict):
            for k, v in node.items():
                yield from walk(v, [*at, k])
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from walk(v, [*at, i])

    return next(walk(doc, ["body"]), ["body"])


def _is_json(scope: Scope) -> bool:
    """FastAPI parses a body as JSON when it has no content type or a JSON one."""
    raw = dict(scope["headers"]).get(b"content-type")
    if raw is None:
        return True
    message = Message()
    message["content-type"] = raw.decode("latin-1")
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


class JsonBodyGuard:
    """ASGI middleware: 413 past ``max_bytes``, 422 for a JSON body with a non-finite number."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in _BODY_METHODS
            or (scope["method"], scope["path"]) in RAW_BODY_ROUTES
        ):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._too_large(receive, send, more=message.get("more_body", False))
                return
            if not message.get("more_body", False):
                break
        if body and _is_json(scope):
            error = _non_finite(bytes(body))
            if error is not None:
                await _json(send, 422, {"detail": [error]})
                return
        await self.app(scope, _replay(bytes(body), receive), send)

    async def _too_large(self, receive: Receive, send: Send, more: bool = True) -> None:
        drained = 0
        while more and drained < _DRAIN_BYTES:
            message = await receive()
            drained += len(message.get("body", b""))
            more = message["type"] == "http.request" and message.get("more_body", False)
        detail = (
            f"the request body is over {self.max_bytes} bytes (HWNAS_MAX_JSON_BYTES); uploads "
            "go to POST /v1/datasets"
        )
        await _json(send, 413, {"detail": detail})


def _non_finite(body: bytes) -> dict[str, Any] | None:
    """The 422 error for the first non-finite number of a JSON body; None when it has none or
    is not JSON at all (then FastAPI answers its own 422)."""
    try:
        text = body.decode()
        json.loads(text, parse_constant=_constant, parse_float=_number)
    except _NonFinite as e:
        return {
            "type": "finite_number",
            "loc": _path_of(e.literal, text),
            "msg": f"Input should be a finite number (JSON has no {quote(e.literal)})",
            "input": quote(e.literal),
        }
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> AsgiMessage:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later calls wait for the client's disconnect, as usual

    return replay


async def _json(send: Send, status: int, content: Any) -> None:
    data = json.dumps(content).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if status == 413:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
