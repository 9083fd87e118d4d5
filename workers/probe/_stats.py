"""Robust summary of repeated latency measurements."""

from __future__ import annotations

from typing import Any

import numpy as np


def summarize(samples_s: list[float]) -> dict[str, Any]:
    """Median, IQR, coefficient of variation, min/max of per-repeat latencies (in ms)."""
    ms = np.asarray(samples_s, dtype=np.float64) * 1e3
    q25, med, q75 = np.percentile(ms, [25, 50, 75])
    mean = float(ms.mean())
    return {
        "median_ms": float(med),
        "iqr_ms": float(q75 - q25),
        "cv": float(ms.std(ddof=1) / mean) if len(ms) > 1 and mean > 0 else 0.0,
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "repeat": len(ms),
    }
