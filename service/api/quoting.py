"""What an error may say of a client's input: at most ``QUOTE_BYTES`` of it, always encodable.

A 422 names the field and quotes the value it refused, so that a person can find it; it must
not send back an 8 MB constraint string twice, nor a ``NaN`` that JSON cannot carry (that
failed encoding and became a 500).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

QUOTE_BYTES = 1024
MAX_ERRORS = 20  # a body with 100,000 bad items gets the first of them, and a count


def clip(text: str, limit: int = QUOTE_BYTES) -> str:
    """``text`` cut to about ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def quote(value: Any, limit: int = QUOTE_BYTES) -> Any:
    """``value`` as JSON can carry it, at most about ``limit`` characters of it.

    Small JSON-safe values come back as they are; a non-finite float as its name ("NaN",
    "Infinity"); anything longer than the limit as a clipped string of its JSON (or repr).
    """
    if value is None or isinstance(value, bool | int):
        return value if len(str(value)) <= limit else clip(str(value), limit)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, bytes | bytearray):
        return clip(bytes(value[: limit + 1]).decode("utf-8", "replace"), limit)
    if isinstance(value, str):
        return clip(value, limit)
    try:
        text = json.dumps(value, allow_nan=False, default=str)
    except (ValueError, TypeError, RecursionError):
        return clip(repr(value)[: limit + 100], limit)
    return json.loads(text) if len(text) <= limit else clip(text, limit)


def safe_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """FastAPI's validation errors with every quoted input, message and context bounded."""
    out: list[dict[str, Any]] = []
    for err in errors[:MAX_ERRORS]:
        e = dict(err)
        item: dict[str, Any] = {
            "type": clip(str(e.get("type", "value_error")), 100),
            "loc": [p if isinstance(p, int) else clip(str(p), 100) for p in e.get("loc", ())],
            "msg": clip(str(e.get("msg", ""))),
        }
        if "input" in e:
            item["input"] = quote(e["input"])
        if isinstance(e.get("ctx"), dict):
            item["ctx"] = {clip(str(k), 100): quote(v, 200) for k, v in e["ctx"].items()}
        out.append(item)
    if len(errors) > MAX_ERRORS:
        out.append(
            {
                "type": "too_many_errors",
                "loc": ["body"],
                "msg": f"{len(errors) - MAX_ERRORS} more errors not shown",
            }
        )
    return out
