"""schemathesis hooks for the conformance run: hostile JSON beside the generated cases.

schemathesis generates what JSON Schema allows, and JSON has no NaN, Infinity or 1e400, nor
does a schema make it send megabytes. This check sends each operation that takes a JSON body,
once per operation, its own valid request changed four ways: a number replaced by ``NaN``,
``Infinity`` and ``1e400`` (raw text: Python's parser takes them), and a 2 MiB string. Each
must be refused with 422 (non-finite) or 413 (too large), with an answer under 100 KB. Loaded
through ``SCHEMATHESIS_HOOKS=tests.service.schemathesis_hooks`` (the conformance test sets it);
each operation checked is written to the file ``HWNAS_HOSTILE_LOG`` names, so the test knows
the check ran on every one.
"""

from __future__ import annotations

import json
import os
from typing import Any

import requests
import schemathesis

_DONE: set[str] = set()
_SMALL = 100_000
_HUGE = 2 << 20


def _with_literal(body: Any, literal: str) -> str:
    """``body`` as JSON text with its first number (else a new top-level field) set to the
    bare ``literal``."""
    marker = "__hwnas_hostile__"
    done = False

    def swap(node: Any) -> Any:
        nonlocal done
        if done:
            return node
        if isinstance(node, bool):
            return node
        if isinstance(node, int | float):
            done = True
            return marker
        if isinstance(node, dict):
            return {k: swap(v) for k, v in node.items()}
        if isinstance(node, list):
            return [swap(v) for v in node]
        return node

    swapped = swap(body)
    if not done:
        swapped = {**swapped, "x": marker} if isinstance(swapped, dict) else [marker, swapped]
    return json.dumps(swapped).replace(f'"{marker}"', literal, 1)


@schemathesis.check
def hostile_json_is_refused(ctx: Any, response: Any, case: Any) -> bool | None:
    """Non-finite numbers are 422 and a 2 MiB body 413, each answered in under 100 KB."""
    if (
        case.body is None
        or not isinstance(case.body, dict | list)
        or case.media_type != "application/json"
    ):
        return None
    sent = response.request
    method = case.operation.method.upper()  # the operation's own (not an other-verb probe's)
    key = f"{method} {case.path}"
    if key in _DONE or str(sent.method).upper() != method:
        return None
    _DONE.add(key)
    headers = {k: v for k, v in sent.headers.items() if k.lower() not in ("content-length",)}
    headers["Content-Type"] = "application/json"
    bodies = {lit: (_with_literal(case.body, lit), 422) for lit in ("NaN", "Infinity", "1e400")}
    big = json.dumps({"x": "y" * _HUGE, **case.body}) if isinstance(case.body, dict) else None
    if big is not None:
        bodies["2 MiB"] = (big, 413)
    for what, (text, expected) in bodies.items():
        got = requests.request(
            sent.method, sent.url, data=text.encode(), headers=headers, timeout=60
        )
        if got.status_code != expected or len(got.content) >= _SMALL:
            raise AssertionError(
                f"{key} with {what}: {got.status_code} and {len(got.content)} bytes "
                f"(expected {expected}, under {_SMALL} bytes): {got.text[:300]}"
            )
    log = os.environ.get("HWNAS_HOSTILE_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{key} {len(bodies)}\n")
    return True
