"""A small client for a remote hwnas service (what ``hwnas submit/jobs/watch/pareto/pull`` use).

``url`` and ``token`` come from ``--url`` / ``HWNAS_URL`` and ``--token`` / ``HWNAS_TOKEN``.
Errors come back as :class:`ServiceError` carrying the status and the service's own message.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"


class ServiceError(RuntimeError):
    """The service answered with an error (``status``) or could not be reached (status 0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status


class Client:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 60):
        self.url = (url or os.environ.get("HWNAS_URL") or DEFAULT_URL).rstrip("/")
        token = token or os.environ.get("HWNAS_TOKEN")
        if not token:
            raise ServiceError(0, "no token: pass --token or set HWNAS_TOKEN")
        self._http = httpx.Client(
            base_url=self.url, timeout=timeout, headers={"Authorization": f"Bearer {token}"}
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            r = self._http.request(method, path, **kw)
        except httpx.TransportError as e:
            raise ServiceError(0, f"cannot reach {self.url}: {e}") from None
        if r.is_error:
            raise ServiceError(r.status_code, _message(r))
        return r

    def json(self, method: str, path: str, **kw: Any) -> Any:
        return self.request(method, path, **kw).json()

    def events(self, job_id: int, max_s: float = 600) -> Iterator[tuple[str, dict[str, Any]]]:
        """The job's server-sent events as (name, data) until the stream closes."""
        try:
            with self._http.stream(
                "GET",
                f"/v1/jobs/{job_id}/events",
                params={"max_s": max_s},
                timeout=httpx.Timeout(60, read=max_s + 60),
            ) as r:
                if r.is_error:
                    r.read()
                    raise ServiceError(r.status_code, _message(r))
                name, data = "message", list[str]()
                for line in r.iter_lines():
                    if not line:
                        if data:
                            yield name, json.loads("\n".join(data))
                        name, data = "message", []
                    elif line.startswith("event:"):
                        name = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
        except httpx.TransportError as e:
            raise ServiceError(0, f"event stream from {self.url} broke: {e}") from None


def _message(r: httpx.Response) -> str:
    try:
        detail = r.json().get("detail")
    except ValueError:
        return r.text[:500]
    if isinstance(detail, list):  # a 422: name each field
        return "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', []))}: {e.get('msg')}" for e in detail
        )
    return str(detail)
