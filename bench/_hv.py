"""Hypervolume of (accuracy, latency, size) results against a fixed reference point.

Objectives are mapped to "smaller is better" and normalised so each spans about [-1, 0]:
validation error ``1 - accuracy`` (linear), ``log10(latency / 0.1 ms) / 2`` and
``log10(size / 1 MB) / 3`` (two and three decades below the reference). The reference point is
(1, 0, 0): a result at 0 % accuracy, 0.1 ms or 1 MB adds nothing; the best possible is about 1.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from optuna._hypervolume import compute_hypervolume

REFERENCE = {
    "error": 1.0,
    "latency_ms": 0.1,
    "size_bytes": 1e6,
    "mapping": "error = 1 - val accuracy; log10(latency_ms / 0.1) / 2; log10(size / 1e6) / 3",
}


def _loss(p: dict[str, Any]) -> list[float]:
    return [
        1.0 - float(p["accuracy"]),
        math.log10(float(p["latency_ms"]) / REFERENCE["latency_ms"]) / 2,
        math.log10(float(p["size_bytes"]) / REFERENCE["size_bytes"]) / 3,
    ]


def hv_curve(points: list[dict[str, Any]]) -> list[float]:
    """Hypervolume of the first k results, for k = 1..len(points), in trial order."""
    ref = np.array([1.0, 0.0, 0.0])
    ordered = sorted(points, key=lambda p: p["trial"])
    kept: list[list[float]] = []
    out: list[float] = []
    for p in ordered:
        loss = _loss(p)
        if all(a < b for a, b in zip(loss, ref, strict=True)):
            kept.append(loss)
        hv = float(compute_hypervolume(np.array(kept), ref)) if kept else 0.0
        out.append(round(max(hv, out[-1] if out else 0.0), 8))  # float noise only
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sections = [result] + [
        v for k, v in result.items() if isinstance(v, dict) and "hypervolume" in v
    ]
    fig, axes = plt.subplots(1, len(sections), figsize=(6 * len(sections), 4.2), squeeze=False)
    for ax, r in zip(axes[0], sections, strict=True):
        for name, curve in r["hypervolume"].items():
            ax.plot(range(1, len(curve) + 1), curve, label=name)
        if r.get("trials_to_match_random_final"):
            ax.axvline(r["trials_to_match_random_final"], color="grey", ls=":", lw=1)
        ax.set_title(
            f"{r['dataset']} ({r['space']}), {r['budget']} trials each, "
            f"overhead {r['overhead_fraction']:.1%}"
        )
        ax.set_xlabel("COMPLETE trials")
        ax.set_ylabel("hypervolume (error, log latency, log size)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
