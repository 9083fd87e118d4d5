"""A small client for a remote hwnas service (what the ``hwnas`` remote commands use).

The service is ``url``, else ``HWNAS_URL``, else http://127.0.0.1:8000 (an empty variable counts
as unset). The token is, first found: ``token`` (``--token``), the file ``token_file``
(``--token-file``), ``HWNAS_TOKEN``, the file ``HWNAS_TOKEN_FILE``; a file keeps the secret out
of the process list and the shell's history. Every failure is a :class:`ServiceError`: the
service's status and its own message, or status 0 when there was no answer to give one (the
service unreachable, a token that cannot be read), with a hint naming the setting to change.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
_TOKEN = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces: a header value


class ServiceError(RuntimeError):
    """The service answered with an error (``status``) or could not be reached (status 0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status


def resolve_url(url: str | None = None) -> tuple[str, str]:
    """The service's base URL and where it came from (``--url``, ``HWNAS_URL`` or default).

    Raises:
        ServiceError: the URL is not an http(s) URL.
    """
    if url:
        source = "--url"
    elif os.environ.get("HWNAS_URL"):
        url, source = os.environ["HWNAS_URL"], "HWNAS_URL"
    else:
        url, source = DEFAULT_URL, "the default"
    url = url.strip().rstrip("/")
    try:
        parsed = httpx.URL(url)
        why = "" if parsed.scheme in ("http", "https") and parsed.host else "not an http(s) URL"
    except httpx.InvalidURL as e:
        why = str(e)
    if why or not re.match(r"^https?://[^/\s]+(/\S*)?$", url):
        raise ServiceError(0, f"{source} {url!r}: {why or 'not a URL'} (set HWNAS_URL or --url)")
    return url, source


def resolve_token(token: str | None = None, token_file: str | None = None) -> tuple[str, str]:
    """The API token and where it came from, by precedence: ``token``, ``token_file``,
    ``HWNAS_TOKEN``, the file ``HWNAS_TOKEN_FILE``.

    Raises:
        ServiceError: no token anywhere, or its file cannot be read or holds no token.
    """
    if token:
        return _checked(token.strip(), "--token"), "--token"
    if token_file:
        return _read_token(token_file, "--token-file"), f"--token-file {token_file}"
    if os.environ.get("HWNAS_TOKEN"):
        return _checked(os.environ["HWNAS_TOKEN"].strip(), "HWNAS_TOKEN"), "HWNAS_TOKEN"
    path = os.environ.get("HWNAS_TOKEN_FILE")
    if path:
        return _read_token(path, "HWNAS_TOKEN_FILE"), f"HWNAS_TOKEN_FILE {path}"
    raise ServiceError(
        0, "no token: pass --token or --token-file, or set HWNAS_TOKEN or HWNAS_TOKEN_FILE"
    )


def _read_token(path: str, source: str) -> str:
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ServiceError(0, f"cannot read the token file {path} ({source}): {why}") from None
    if not text:
        raise ServiceError(0, f"the token file {path} ({source}) is empty")
    return _checked(text.splitlines()[0].strip(), f"the token file {path}")


def _checked(token: str, source: str) -> str:
    if not _TOKEN.match(token):
        raise ServiceError(0, f"{source}: not a token (printable ASCII without spaces expected)")
    return token


class Client:
    """Requests to one service with one token; use it as a context manager.

    Args:
        url: the service (else ``HWNAS_URL``, else :data:`DEFAULT_URL`).
        token: an API token (else ``token_file``, ``HWNAS_TOKEN``, ``HWNAS_TOKEN_FILE``).
        timeout: seconds to connect and to wait for each answer.
        token_file: a file holding the token.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 60,
        token_file: str | None = None,
    ) -> None:
        self.url, self.url_source = resolve_url(url)
        secret, self.token_source = resolve_token(token, token_file)
        self._secret = secret
        self._http = httpx.Client(
            base_url=self.url, timeout=timeout, headers={"Authorization": f"Bearer {secret}"}
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def close(self) -> None:
        self._http.close()

    def uses_token(self, prefix: str) -> bool:
        """Whether this client's token starts with ``prefix`` (a token's public prefix)."""
        return bool(prefix) and self._secret.startswith(prefix)

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """One request; an error status or no answer raises :class:`ServiceError`."""
        try:
            r = self._http.request(method, path, **kw)
        except (httpx.TransportError, httpx.InvalidURL) as e:
            raise self._unreachable(e) from None
        if r.is_error:
            raise self._refused(r)
        return r

    def json(self, method: str, path: str, **kw: Any) -> Any:
        """One request's JSON answer."""
        r = self.request(method, path, **kw)
        try:
            return r.json()
        except ValueError:
            raise ServiceError(
                0,
                f"{path} answered {r.headers.get('content-type', 'no content type')}, not "
                f"JSON: is {self._where()} a hwnas service?",
            ) from None

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
                    raise self._refused(r)
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
        except (httpx.TransportError, httpx.InvalidURL) as e:
            raise ServiceError(0, f"the event stream from {self.url} broke: {_why(e)}") from None

    def _where(self) -> str:
        where = "the default" if self.url_source == "the default" else f"from {self.url_source}"
        return f"{self.url} ({where}; set HWNAS_URL or --url)"

    def _unreachable(self, e: Exception) -> ServiceError:
        return ServiceError(0, f"cannot reach {self._where()}: {_why(e)}")

    def _refused(self, r: httpx.Response) -> ServiceError:
        message = _message(r)
        if r.status_code == 401:
            where = "the default" if self.url_source == "the default" else self.url_source
            message += (
                f" (sent the token from {self.token_source} to {self.url} from {where}: check "
                "the token, or HWNAS_URL / --url)"
            )
        elif not _is_hwnas_error(r):
            message += f" (is {self._where()} a hwnas service?)"
        return ServiceError(r.status_code, message)


def _why(e: Exception) -> str:
    return str(e) or type(e).__name__


def _is_hwnas_error(r: httpx.Response) -> bool:
    """The service's own error body: JSON with a ``detail``."""
    try:
        body = r.json()
    except ValueError:
        return False
    return isinstance(body, dict) and "detail" in body


def _message(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text.strip()[:500] or r.reason_phrase
    detail = body.get("detail") if isinstance(body, dict) else body
    if isinstance(detail, list):  # a 422: name each field
        return "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', []))}: {e.get('msg')}"
            if isinstance(e, dict)
            else str(e)
            for e in detail
        )
    return str(detail)
