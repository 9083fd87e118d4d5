"""Reading a worker's result: study metric values, the latency stats kept per trial, and the
worker's own error text out of Ray's wrapper."""

from __future__ import annotations

import traceback
from typing import Any


def metric_value(metrics: dict[str, Any], name: str) -> float:
    """A study metric (``latency_ms@<profile>`` or a metrics key) from a worker's metrics."""
    if name.startswith("latency_ms@"):
        return float(metrics["latency_ms"][name.split("@", 1)[1]])
    return float(metrics[name])


LATENCY_ATTRS = (  # the per-profile probe stats kept as trial user attrs
    "median_ms",
    "iqr_ms",
    "cv",
    "repeat",
    "number",
    "tuning",
    "partial",
    "precision",
    "cache_hit",
    "tune_s",
    "tvm_version",
)


def error_message(e: BaseException) -> str:
    """The worker's own exception, not Ray's wrapper text."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException):
        tb = "".join(traceback.format_exception_only(type(cause), cause)).strip()
        return tb
    return f"{type(e).__name__}: {e}"
