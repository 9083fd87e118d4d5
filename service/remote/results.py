"""A job's results over HTTP: ``pareto`` (the front, with a legend), ``best``, ``report``."""

from __future__ import annotations

import argparse
import webbrowser
from pathlib import Path
from typing import Any

from service.client import Client
from service.remote.base import UserError, acc, console, kb, ms, print_json

LEGEND = (
    "latency: ms per inference on each profile; verified = the shipped library timed "
    "again after the job in a fresh process, search = the search-time probe only.",
    "speedup: the dense parent's verified latency / this model's (- = not verified); for a "
    "network job the parent is your uploaded model, and d acc is the validation accuracy "
    "change against it.",
    "flags: no-speedup = compressed but under 1.05x faster than dense; "
    "disagrees = search-time and verified latency differ beyond noise; "
    "untuned = timed with TVM's default schedules (tuning is not metaschedule: off, "
    "a GPU default or unknown), tuned code may be faster.",
    "summary: family [stage, ...] head wXaY. A stage: DxW = D blocks of width W (W alone = "
    "one block); kK = kernel size; eE = expansion ratio (mbv2); its weights: wB = B-bit (w32, "
    "w16 float; w8, w4, w2 integer), ternary = {-a, 0, +a} per output channel, binary = "
    "{-a, +a}, kmB = a k-means codebook of 2^B shared values; aB = activation bits (a32 = "
    "float); pP = fraction of channels pruned; rR = fraction of full rank kept (r1 = not "
    "factorized); sS = fraction of weights zeroed, unstructured (absent: none); mixed = "
    "compression chosen per block. head wXaY = the stem's and head's weight and activation "
    "bits.",
)


def _profiles(point: dict[str, Any]) -> list[str]:
    return list(point.get("latency_ms") or point.get("latency_tuning") or {})


def _per_profile(point: dict[str, Any], one: bool, cell: Any) -> str:
    lines = []
    for prof in _profiles(point):
        text = cell(prof)
        if text:
            lines.append(text if one else f"{prof}: {text}")
    return "\n".join(lines) or "-"


def flags(point: dict[str, Any], prof: str) -> list[str]:
    """The point's flags on profile ``prof``: no-speedup, disagrees, untuned."""
    out = []
    if (point.get("no_speedup") or {}).get(prof):
        out.append("no-speedup")
    if (point.get("latency_disagrees") or {}).get(prof):
        out.append("disagrees")
    if (point.get("latency_tuning") or {}).get(prof, "unknown") != "metaschedule":
        out.append("untuned")
    return out


def latency_cell(point: dict[str, Any], prof: str) -> str:
    """``0.00126 verified`` or ``0.00125 search``."""
    v = (point.get("latency_ms") or {}).get(prof)
    if v is None:
        return ""
    source = (point.get("latency_source") or {}).get(prof, "search")
    return f"{ms(v)} {'verified' if source == 'verified' else 'search'}"


def speedup_cell(point: dict[str, Any], prof: str) -> str:
    v = (point.get("speedup_vs_dense") or {}).get(prof)
    return f"{v:.2f}x" if v is not None else "-"


def pareto_table(front: dict[str, Any]) -> Any:
    """The front as a rich Table: one row per point, a line per profile in its cells."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    points = front["data"]
    profiles = sorted({p for point in points for p in _profiles(point)})
    one = len(profiles) == 1
    title = f"job {front['job_id']}: {len(points)} Pareto points"
    table = Table(
        title=title + (f" on {profiles[0]}" if one else ""), box=box.SIMPLE_HEAD, pad_edge=False
    )
    for col in ("model", "val\nacc", "d acc", "test\nacc", "latency\nms", "speedup", "size\nKB"):
        table.add_column(col, justify="left" if col in ("model", "latency\nms") else "right")
    table.add_column("flags")
    table.add_column("summary", ratio=1, min_width=12)
    for p in points:
        cells = (
            str(p.get("model_id") or f"trial {p['trial']}"),
            acc(p["accuracy"]),
            _signed(p.get("accuracy_change")),
            acc(p.get("test_accuracy")),
            _per_profile(p, one, lambda prof, p=p: latency_cell(p, prof)),
            _per_profile(p, one, lambda prof, p=p: speedup_cell(p, prof)),
            kb(p["size_bytes"]),
            _per_profile(p, one, lambda prof, p=p: " ".join(flags(p, prof))),
            p["summary"],
        )
        table.add_row(*(Text(c) for c in cells))
    return table


def _signed(v: float | None) -> str:
    return "-" if v is None else f"{v:+.3f}"


def pareto(client: Client, args: argparse.Namespace) -> int:
    """GET /v1/jobs/{id}/pareto: the table and its legend (``--json``: the API's JSON)."""
    from rich.text import Text

    front = client.json("GET", f"/v1/jobs/{args.job_id}/pareto")
    if args.json:
        print_json(front)
        return 0
    con = console()
    if not front["data"]:
        con.print(f"job {args.job_id} has no Pareto points yet (no complete feasible trial)")
        return 0
    con.print(pareto_table(front))
    con.print(Text(f"compared with {front.get('compared_with', 'the dense parent')}"))
    for line in LEGEND:
        con.print(Text(line))
    return 0


def best(client: Client, args: argparse.Namespace) -> int:
    """GET /v1/jobs/{id}/best?by=: the front's most accurate, smallest or fastest point."""
    point = client.json("GET", f"/v1/jobs/{args.job_id}/best", params={"by": args.by})
    if args.json:
        print_json(point)
        return 0
    lines = [
        f"best by {args.by}: model {point.get('model_id') or '-'} (job {args.job_id} trial "
        f"{point['trial']})",
        f"  val acc {acc(point['accuracy'])} ({_signed(point.get('accuracy_change'))} vs "
        f"the parent), test acc {acc(point.get('test_accuracy'))}",
        f"  size {kb(point['size_bytes'])} KB"
        + (
            f" ({point['size_ratio_vs_dense']:.1f}x smaller than dense)"
            if point.get("size_ratio_vs_dense")
            else ""
        ),
    ]
    for prof in _profiles(point):
        f = flags(point, prof)
        v = (point.get("latency_ms") or {}).get(prof)
        source = (point.get("latency_source") or {}).get(prof, "search")
        lines.append(
            f"  {prof}: {ms(v)} ms ({'verified' if source == 'verified' else 'search-time'}), "
            f"speedup vs dense {speedup_cell(point, prof)}" + (f" [{', '.join(f)}]" if f else "")
        )
    lines.append(f"  {point['summary']}")
    print("\n".join(lines))
    return 0


def report(client: Client, args: argparse.Namespace) -> int:
    """GET /v1/jobs/{id}/report.html into a file (``--open``: then in the browser)."""
    out = Path(args.out or f"hwnas-job-{args.job_id}-report.html")
    if out.is_dir():
        raise UserError(f"{out} is a directory: name the report's file (-o FILE)")
    if not out.parent.is_dir():
        raise UserError(f"cannot write {out}: the directory {out.parent} does not exist")
    page = client.request("GET", f"/v1/jobs/{args.job_id}/report.html").content
    out.write_bytes(page)
    print(f"job {args.job_id}'s report: {out} ({len(page) / 1024:.0f} KB)")
    if args.open and not webbrowser.open(out.resolve().as_uri()):
        print(f"no web browser found here: open {out} yourself", flush=True)
    return 0
