"""A job's report for people: the Pareto front per objective pair (PNG) and an HTML page with it,
the table of front points, and what the job cost and its caches saved.

Every trained trial is plotted; those breaking a constraint are marked infeasible (red x), the
front's points are ringed, and where the front's latency was verified from the shipped library
the point sits at the verified value with a thin line back to the search-time value. Candidates
the pre-filter rejected untrained have no accuracy: they are counted, not plotted.
"""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime
from itertools import combinations
from typing import Any

import optuna
from optuna.trial import TrialState

from service.scheduler.front import FrontPoint, JobScoring
from service.schemas import JobReport
from workers.records import Metrics
from workers.scoring import feasible, latency_profile

_LABELS = {
    "accuracy": "validation accuracy",
    "size_bytes": "size (KB)",
    "macs": "MACs",
    "bitops": "BitOps",
}


def _label(metric: str) -> str:
    profile = latency_profile(metric)
    return f"latency {profile} (ms)" if profile else _LABELS.get(metric, metric)


def _scale(metric: str, v: float) -> float:
    return v / 1024 if metric == "size_bytes" else v


def front_png(study: optuna.Study | None, scoring: JobScoring, front: list[FrontPoint]) -> bytes:
    """The Pareto front per objective pair, one panel each, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = scoring.metric_names
    pairs = list(combinations(range(len(names)), 2)) or [(0, 0)]
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.2 * len(pairs), 4.2), squeeze=False)
    trials = (
        study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if study is not None else []
    )
    ok: list[list[float]] = []
    bad: list[list[float]] = []
    for t in trials:
        if t.user_attrs.get("prefiltered") or "metrics" not in t.user_attrs:
            continue
        m = Metrics.model_validate(t.user_attrs["metrics"])
        values = scoring.values(m)
        (ok if feasible(scoring.constraint_values(m)) else bad).append(values)
    on_front = {p.trial.number for p in front}
    for ax, (i, j) in zip(axes[0], pairs, strict=True):
        xi, yi = names[i], names[j]
        for points, style in (
            (ok, {"c": "#4c72b0", "marker": "o", "s": 18, "alpha": 0.55, "label": "feasible"}),
            (
                bad,
                {
                    "c": "#c44e52",
                    "marker": "x",
                    "s": 26,
                    "label": "infeasible (a constraint broken)",
                },
            ),
        ):
            if points:
                ax.scatter(
                    [_scale(xi, p[i]) for p in points], [_scale(yi, p[j]) for p in points], **style
                )
        for p in front:
            x, y = _scale(xi, p.values[i]), _scale(yi, p.values[j])
            searched = _search_values(p, scoring)
            sx, sy = _scale(xi, searched[i]), _scale(yi, searched[j])
            if (sx, sy) != (x, y):
                ax.plot([sx, x], [sy, y], color="#dd8452", lw=0.8)
        if front:
            ax.scatter(
                [_scale(xi, p.values[i]) for p in front],
                [_scale(yi, p.values[j]) for p in front],
                facecolors="none",
                edgecolors="#dd8452",
                s=80,
                lw=1.6,
                label="Pareto front (latency verified where a line leads to it)",
            )
        ax.set_xlabel(_label(xi))
        ax.set_ylabel(_label(yi))
        for axis, metric in (("x", xi), ("y", yi)):
            if latency_profile(metric) or metric in ("size_bytes", "macs", "bitops"):
                getattr(ax, f"set_{axis}scale")("log")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f"{len(on_front)} Pareto points of {len(ok) + len(bad)} trained trials")
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _search_values(p: FrontPoint, scoring: JobScoring) -> list[float]:
    m = p.metrics.model_copy(update={"latency_ms": {**p.metrics.latency_ms, **p.search_latency_ms}})
    return scoring.values(m)


def _rate(r: float | None) -> str:
    return "-" if r is None else f"{r:.0%}"


def report_html(
    job: dict[str, Any],
    front_points: list[dict[str, Any]],
    cost: JobReport,
    png: bytes,
) -> str:
    """The page: the job, the front's plot and table, cost and cache figures (self-contained:
    the plot is inlined, no script, no external resource)."""
    e = html.escape
    spec = job["spec"]
    rows = []
    for p in front_points:
        lat = "<br>".join(
            f"{e(k)}: {v:.4f} ms ({e(p['latency_source'].get(k, 'search'))})"
            for k, v in p["latency_ms"].items()
        )
        speed = ", ".join(
            f"{v:.2f}x" for v in p.get("speedup_vs_dense", {}).values() if v is not None
        )
        test = p["test_accuracy"]
        rows.append(
            "<tr class='point'>"
            f"<td>{p['trial']}</td><td>{e(str(p['model_id']))}</td>"
            f"<td>{p['accuracy']:.4f}</td><td>{'-' if test is None else f'{test:.4f}'}</td>"
            f"<td>{lat or '-'}</td><td>{speed or '-'}</td>"
            f"<td>{p['size_bytes'] / 1024:.2f}</td><td>{e(p['summary'])}</td></tr>"
        )
    states = ", ".join(f"{e(k)} {v}" for k, v in sorted(cost.trials.items())) or "none yet"
    caches = "".join(
        f"<tr><td>{e(k)}</td><td>{v['hits']}/{v['lookups']}</td><td>{_rate(v['hit_rate'])}</td></tr>"
        for k, v in cost.cache.items()
    )
    stages = "".join(
        f"<tr><td>{e(k)}</td><td>{v:.1f}</td></tr>" for k, v in sorted(cost.cpu_s.items())
    )
    pre = cost.prefilter
    constraints = ", ".join(e(c) for c in spec.get("constraints", [])) or "none"
    img = base64.b64encode(png).decode()
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>hwnas job {job["id"]}: {e(job["name"] or spec["space"])}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; vertical-align: top; }}
td:last-child {{ text-align: left; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>Job {job["id"]} &middot; {e(job["name"] or "")}</h1>
<p id="summary">status <b>{e(job["status"])}</b>; {job["progress"]["trials_complete"]} of
{job["progress"]["budget"]} trials complete, {job["progress"]["trials_failed"]} failed;
{e(spec["space"])} on {e(spec["dataset"])} for {e(", ".join(spec["profiles"]))};
objectives {e(", ".join(spec["objectives"]))}; constraints {constraints}.
Generated {datetime.now().astimezone().isoformat(timespec="seconds")}.</p>
<h2>Pareto front</h2>
<img id="front" alt="Pareto front per objective pair" src="data:image/png;base64,{img}">
<table id="points"><thead><tr><th>trial</th><th>model</th><th>val acc</th><th>test acc</th>
<th>latency</th><th>x dense</th><th>size KB</th><th>architecture / compression</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table>
<h2>Cost</h2>
<p id="trials">trials: {states}. Pre-filter: {pre["rejected"]} rejected untrained, probing took
{pre["spent_s"]} s{
        ""
        if pre["train_s_saved_est"] is None
        else f", about {pre['train_s_saved_est']} s of training saved"
    }.</p>
<table id="cpu"><thead><tr><th>stage</th><th>CPU s</th></tr></thead><tbody>{stages}</tbody></table>
<h2>Caches</h2>
<table id="caches"><thead><tr><th>cache</th><th>hits / lookups</th><th>hit rate</th></tr></thead>
<tbody>{caches}</tbody></table>
</body></html>
"""
