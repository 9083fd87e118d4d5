"""HTTP errors in one shape, what every route documents, and the app-wide handlers.

Every error body is :class:`~service.schemas.ErrorPublic` (``detail`` + an ``error_id`` for a
500) except request validation (422: FastAPI's list of ``{loc, msg, type, input}``); a 422
raised by a route names its field the same way. What an error quotes of the input is bounded
(:mod:`service.api.quoting`). Internal exception text is logged under an error id, never
returned.
"""

from __future__ import annotations

import errno
import logging
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy.exc
from fastapi import FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

from service.api.quoting import clip, safe_errors
from service.schemas import ErrorPublic

log = logging.getLogger("service.api")

_WHY = {
    401: "no valid bearer token",
    403: "not allowed: an admin-only call, or a quota of the account reached (detail names it)",
    404: "no such resource, or not yours",
    409: "the resource's state does not allow this now (detail says why)",
    413: "the body is larger than the service accepts (JSON: HWNAS_MAX_JSON_BYTES; uploads: "
    "HWNAS_MAX_UPLOAD_BYTES, or what they decode to)",
    429: "too many job submissions: wait the Retry-After seconds",
    507: "the service's disk is full: nothing was stored",
}


def responses(*codes: int, json_route: bool = True) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: every status it can answer besides success and 422.

    A route whose success is not JSON (HTML, text, a stream) passes ``json_route=False``:
    FastAPI would otherwise document its JSON errors under the route's own media type.
    """
    if json_route:
        return {c: {"model": ErrorPublic, "description": _WHY[c]} for c in (401, *codes)}
    body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorPublic"}}}
    return {c: {"description": _WHY[c], "content": body} for c in (401, *codes)}


def not_found(what: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"{what} not found")


def conflict(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, detail)


def forbidden(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_403_FORBIDDEN, detail)


def disk_full(what: str, e: OSError) -> HTTPException:
    """507 for a write the disk had no room for (ENOSPC, or over a quota of the filesystem)."""
    return HTTPException(
        status.HTTP_507_INSUFFICIENT_STORAGE,
        f"the service's disk is full: {what} was not stored ({e.strerror})",
    )


def is_disk_full(e: OSError) -> bool:
    return e.errno in (errno.ENOSPC, errno.EDQUOT)


def invalid(loc: tuple[str | int, ...], msg: str, value: Any = None) -> RequestValidationError:
    """A 422 naming the field at ``loc`` (e.g. ``("body", "trials")``), like FastAPI's own."""
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": msg, "input": value}])


def install(app: FastAPI) -> None:
    """Handlers: 500s with an error id (the exception logged, not returned); 405s whose
    ``Allow`` lists every method of the path (Starlette names only the first route's)."""

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        error_id = uuid.uuid4().hex[:12]
        log.error("error %s on %s %s", error_id, request.method, request.url.path, exc_info=exc)
        body = ErrorPublic(detail="internal error (logged on the server)", error_id=error_id)
        return JSONResponse(body.model_dump(), status_code=500)

    @app.exception_handler(sqlalchemy.exc.TimeoutError)
    async def _busy(request: Request, exc: sqlalchemy.exc.TimeoutError) -> JSONResponse:
        log.warning("database pool exhausted on %s %s: %s", request.method, request.url.path, exc)
        body = ErrorPublic(detail="the service is busy (no database connection free): retry")
        return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": safe_errors(exc.errors())}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == status.HTTP_400_BAD_REQUEST and exc.detail == _UNPARSED:
            # FastAPI's answer to a body that is not even text (not UTF-8): one more kind of
            # malformed JSON, answered like the others
            err = {"type": "json_invalid", "loc": ["body"], "msg": "the body is not UTF-8 JSON"}
            return JSONResponse({"detail": [err]}, status_code=422)
        headers = dict(exc.headers or {})
        detail = clip(exc.detail) if isinstance(exc.detail, str) else exc.detail
        if exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED:
            headers["Allow"] = ", ".join(_methods(app, request))
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=headers)


_UNPARSED = "There was an error parsing the body"


def _methods(app: FastAPI, request: Request) -> list[str]:
    methods: set[str] = set()
    for route in _routes(app.router.routes):
        match, _ = route.matches(request.scope)  # PARTIAL: the path matches, the method not
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def _routes(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """Every route, into included routers (FastAPI keeps those as one entry each)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _routes(inner.routes)
        else:
            yield route


def document_body_limit(app: FastAPI) -> None:
    """State in the OpenAPI document that every JSON body may be answered 413 (over
    HWNAS_MAX_JSON_BYTES: :class:`service.api.bodies.JsonBodyGuard`, before any route)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorPublic"}}}
        for path in schema.get("paths", {}).values():
            for op in path.values():
                content = op.get("requestBody", {}).get("content", {})
                if "application/json" in content:
                    op.setdefault("responses", {}).setdefault(
                        "413", {"description": _WHY[413], "content": body}
                    )
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
