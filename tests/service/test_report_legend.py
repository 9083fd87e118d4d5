"""The report page says what every marker, column and flag it draws means: a job with no
constraints of its own shows partly-untuned points apart, never as 'a constraint broken'."""

from __future__ import annotations

from typing import Any

from service.api.report import job_report
from service.api.report_page import LEGEND, report_html

SPEC = {
    "space": "mlp_small",
    "dataset": "digits",
    "profiles": ["x86/local"],
    "objectives": ["accuracy", "latency@x86/local"],
    "constraints": [],
    "tuning": "metaschedule",
}


def _point(**over: Any) -> dict[str, Any]:
    return {
        "trial": 3,
        "model_id": "1-3",
        "accuracy": 0.9,
        "test_accuracy": 0.89,
        "latency_ms": {"x86/local": 0.05},
        "latency_source": {"x86/local": "verified"},
        "latency_tuning": {"x86/local": "metaschedule"},
        "speedup_vs_dense": {"x86/local": 1.01},
        "no_speedup": {"x86/local": True},
        "latency_disagrees": {"x86/local": False},
        "size_bytes": 2048,
        "summary": "mlp [64 w8a8 p0 r1] head w8a32",
        **over,
    }


def test_every_flag_drawn_is_explained() -> None:
    job = {
        "id": 1,
        "name": "j",
        "status": "succeeded",
        "spec": SPEC,
        "progress": {"trials_complete": 2, "budget": 2, "trials_failed": 0},
    }
    page = report_html(
        job,
        [_point(), _point(trial=4, latency_tuning={"x86/local": "untuned"}, no_speedup={})],
        job_report(1, []),
        b"\x89PNG",
    )
    assert "constraints none (and the implicit latency_tuned" in page
    assert "x86/local: no speedup" in page and "x86/local: untuned" in page
    legend = page[page.index('id="legend"') :]
    for term, _ in LEGEND:
        assert f"<dt>{term}</dt>" in legend
    for drawn in ("no speedup", "disagrees", "untuned", "orange triangle", "red x", "x dense"):
        assert any(drawn in term for term, _ in LEGEND), drawn
    assert "partly untuned" in legend and "budget.tune_s" in legend
