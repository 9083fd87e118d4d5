"""A job's report for people: the Pareto front per objective pair (PNG) and an HTML page with it,
the table of front points, and what the job cost and its caches saved.

Every trained trial is plotted; those breaking one of the job's constraints are marked
infeasible (red x), those whose latency came from partly untuned code are marked apart (orange
triangle: kept off the front, whatever the constraints say, since untuned code mis-ranks), the
front's points are ringed, and where the front's latency was verified from the shipped library
the point sits at the verified value with a thin line back to the search-time value. Candidates
the pre-filter rejected untrained have no accuracy: they are counted, not plotted. The page
says what every marker, column and flag means (:data:`LEGEND`).
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

from service.api.pareto import compared_with
from service.scheduler.front import FrontPoint, JobScoring
from service.schemas import JobReport
from workers.records import Metrics
from workers.scoring import TUNED, feasible, latency_profile

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
    untuned: list[list[float]] = []
    for t in trials:
        if t.user_attrs.get("prefiltered") or "metrics" not in t.user_attrs:
            continue
        m = Metrics.model_validate(t.user_attrs["metrics"])
        values = scoring.values(m)
        verdict = scoring.constraint_values(m)
        if not feasible({k: v for k, v in verdict.items() if k != TUNED}):
            bad.append(values)
        elif not feasible(verdict):
            untuned.append(values)
        else:
            ok.append(values)
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
            (
                untuned,
                {
                    "c": "#dd8452",
                    "marker": "^",
                    "s": 22,
                    "alpha": 0.7,
                    "label": "latency from partly untuned code (not final: off the front)",
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
    trained = len(ok) + len(bad) + len(untuned)
    fig.suptitle(f"{len(on_front)} Pareto points of {trained} trained trials")
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _search_values(p: FrontPoint, scoring: JobScoring) -> list[float]:
    m = p.metrics.model_copy(update={"latency_ms": {**p.metrics.latency_ms, **p.search_latency_ms}})
    return scoring.values(m)


# Every marker, column and flag the page draws, and what it means (shown under the table).
LEGEND: tuple[tuple[str, str], ...] = (
    ("blue dot", "a trained trial that meets every constraint of the job"),
    (
        "red x",
        "infeasible: the trial breaks a constraint the job set (the summary lists them)",
    ),
    (
        "orange triangle",
        "its latency came from partly untuned code (a TVM task without a tuning record): "
        "untuned code can be many times slower and mis-ranks candidates, so such a latency is "
        "never final and the trial stays off the front; the job's tuning budget (budget.tune_s) "
        "or a pre-tuned profile (hwnas tune-profile) removes it. This is the implicit "
        "constraint latency_tuned, set on every job that measures latency with tuning on",
    ),
    ("ringed point", "on the Pareto front: no other feasible trial is better in every objective"),
    (
        "thin line",
        "from the search-time latency to the verified one: the shipped library timed again "
        "after the job, in a fresh process beside its dense parent",
    ),
    ("val acc / test acc", "accuracy on the validation split (the objective) / the test split"),
    ("latency (verified)", "the shipped library's latency timed after the job"),
    ("latency (search)", "the search-time probe's latency (the job did not verify this point)"),
    ("x dense", "speedup over the dense fp32 parent on the same profile, verified latencies"),
    (
        "x yours",
        "for a job on an uploaded network: speedup over your model as uploaded (fp32), same "
        "profile, verified latencies",
    ),
    ("d acc", "validation accuracy minus the parent's (yours, for an uploaded network)"),
    ("no speedup", "compressed, but under 1.05x faster than the dense parent"),
    ("disagrees", "search-time and verified latency differ beyond their noise"),
    (
        "untuned / default-gpu",
        "the latency was measured with TVM's default schedules (the job's tuning was off)",
    ),
)


def _flags(p: dict[str, Any]) -> list[str]:
    """The flags of one front point, per profile."""
    out = []
    for profile in p["latency_ms"]:
        tags = []
        if p.get("no_speedup", {}).get(profile):
            tags.append("no speedup")
        if p.get("latency_disagrees", {}).get(profile):
            tags.append("disagrees")
        tuning = p.get("latency_tuning", {}).get(profile, "metaschedule")
        if tuning != "metaschedule":
            tags.append(tuning)
        if tags:
            out.append(f"{profile}: {', '.join(tags)}")
    return out


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
        change = p.get("accuracy_change")
        rows.append(
            "<tr class='point'>"
            f"<td>{p['trial']}</td><td>{e(str(p['model_id']))}</td>"
            f"<td>{p['accuracy']:.4f}</td><td>{'-' if change is None else f'{change:+.4f}'}</td>"
            f"<td>{'-' if test is None else f'{test:.4f}'}</td>"
            f"<td>{lat or '-'}</td><td>{speed or '-'}</td>"
            f"<td>{'<br>'.join(e(f) for f in _flags(p)) or '-'}</td>"
            f"<td>{p['size_bytes'] / 1024:.2f}</td><td>{e(p['summary'])}</td></tr>"
        )
    legend = "".join(f"<dt>{e(term)}</dt><dd>{e(text)}</dd>" for term, text in LEGEND)
    states = ", ".join(f"{e(k)} {v}" for k, v in sorted(cost.trials.items())) or "none yet"
    caches = "".join(
        f"<tr><td>{e(k)}</td><td>{v['hits']}/{v['lookups']}</td><td>{_rate(v['hit_rate'])}</td></tr>"
        for k, v in cost.cache.items()
    )
    stages = "".join(
        f"<tr><td>{e(k)}</td><td>{v:.1f}</td></tr>" for k, v in sorted(cost.cpu_s.items())
    )
    pre = cost.prefilter
    versus = "yours" if spec.get("network") else "dense"
    constraints = ", ".join(e(c) for c in spec.get("constraints", [])) or "none"
    if JobScoring.from_spec(spec).require_tuned:
        constraints += " (and the implicit latency_tuned: see the orange triangle below)"
    img = base64.b64encode(png).decode()
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>hwnas job {job["id"]}: {e(job["name"] or spec["space"])}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; vertical-align: top; }}
td:last-child {{ text-align: left; }} img {{ max-width: 100%; }}
dt {{ font-weight: bold; margin-top: .4em; }} dd {{ margin-left: 1.5em; }}
</style></head><body>
<h1>Job {job["id"]} &middot; {e(job["name"] or "")}</h1>
<p id="summary">status <b>{e(job["status"])}</b>; {job["progress"]["trials_complete"]} of
{job["progress"]["budget"]} trials complete, {job["progress"]["trials_failed"]} failed;
{e(spec["space"])} on {e(spec["dataset"])} for {e(", ".join(spec["profiles"]))};
objectives {e(", ".join(spec["objectives"]))}; constraints {constraints}.
Generated {datetime.now().astimezone().isoformat(timespec="seconds")}.</p>
<h2>Pareto front</h2>
<img id="front" alt="Pareto front per objective pair" src="data:image/png;base64,{img}">
<p id="compared">Compared with {e(compared_with(spec))}.</p>
<table id="points"><thead><tr><th>trial</th><th>model</th><th>val acc</th><th>d acc</th>
<th>test acc</th><th>latency</th><th>x {versus}</th><th>flags</th><th>size KB</th>
<th>architecture / compression</th>
</tr></thead><tbody>{"".join(rows)}</tbody></table>
<h3>How to read the plot and the table</h3>
<dl id="legend">{legend}</dl>
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
