"""``hwnas submit / jobs / watch / pareto / pull``: the service over HTTP, from any host.

Every command takes ``--url`` (``HWNAS_URL``, default http://127.0.0.1:8000) and ``--token``
(``HWNAS_TOKEN``; the environment keeps it out of the process list). Exit status 0 on success,
1 when a watched job ended otherwise, 2 when the service refused or could not be reached.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

from service.client import Client, ServiceError

_ENDED = ("succeeded", "failed", "cancelled")


def add_commands(sub: Any) -> None:
    """Register the remote commands on the ``hwnas`` parser's subparsers."""

    def command(name: str, fn: Any, help_: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--url", help="the service (default $HWNAS_URL or http://127.0.0.1:8000)")
        p.add_argument("--token", help="an API token (default $HWNAS_TOKEN)")
        p.set_defaults(fn=lambda args: _run(fn, args))
        return p

    p = command("submit", submit, "submit a job (a JSON file, - for stdin); prints its id")
    p.add_argument("spec", help="job spec JSON file")
    p.add_argument("--watch", action="store_true", help="then watch it to its end")
    p = command("jobs", jobs, "list jobs (newest first)")
    p.add_argument("--status", action="append", help="only these states (repeatable)")
    p.add_argument("--name", help="names containing this")
    p.add_argument("--owner", help="an account's jobs (admin)")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true", help="the API's JSON")
    p = command("watch", watch, "follow a job: progress bar, running trials' stages, ETA")
    p.add_argument("job_id", type=int)
    p = command("pareto", pareto, "a job's Pareto front")
    p.add_argument("job_id", type=int)
    p.add_argument("--json", action="store_true", help="the API's JSON")
    p = command("pull", pull, "download a model bundle and unpack it")
    p.add_argument("model_id", help="<job>-<trial>, e.g. 3-7")
    p.add_argument("-o", "--out", help="directory (default ./hwnas-model-<id>)")


def _run(fn: Any, args: argparse.Namespace) -> int:
    try:
        with Client(args.url, args.token) as client:
            code: int = fn(client, args)
            return code
    except ServiceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def submit(client: Client, args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.spec == "-" else Path(args.spec).read_text()
    job = client.json("POST", "/v1/jobs", json=json.loads(text))
    print(job["id"])
    if args.watch:
        args.job_id = job["id"]
        return watch(client, args)
    return 0


def jobs(client: Client, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    for key in ("status", "name", "owner"):
        if getattr(args, key):
            params[key] = getattr(args, key)
    page = client.json("GET", "/v1/jobs", params=params)
    if args.json:
        print(json.dumps(page, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(page['data'])} of {page['count']} jobs")
    for col in ("id", "name", "owner", "status", "trials", "best acc", "created"):
        table.add_column(col, justify="right" if col in ("id", "trials", "best acc") else "left")
    for j in page["data"]:
        p = j["progress"]
        best = f"{p['best_accuracy']:.3f}" if p["best_accuracy"] is not None else "-"
        table.add_row(
            str(j["id"]),
            j["name"],
            j["owner"],
            j["status"],
            f"{p['trials_complete']}/{p['budget']}",
            best,
            j["created_at"][:19],
        )
    Console().print(table)
    return 0


def watch(client: Client, args: argparse.Namespace) -> int:
    """Follow the job's event stream (reconnecting when it closes) until the job ends."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console(stderr=True)
    job = client.json("GET", f"/v1/jobs/{args.job_id}")
    cols = (
        TextColumn(f"[bold]job {args.job_id}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
    )
    with Progress(*cols, console=console, transient=False) as bar:
        task = bar.add_task("trials", total=job["progress"]["budget"], info="")
        while job["status"] not in _ENDED:
            for name, data in client.events(args.job_id, max_s=300):
                if name == "job":
                    job = data
                    p = job["progress"]
                    bar.update(task, total=p["budget"], completed=p["trials_complete"])
                    bar.update(task, info=_info(job))
                elif name == "end":
                    job = client.json("GET", f"/v1/jobs/{args.job_id}")
                    break
    p = job["progress"]
    print(
        f"job {args.job_id} {job['status']}: {p['trials_complete']}/{p['budget']} trials, "
        f"{p['trials_failed']} failed" + (f"; error: {job['error']}" if job["error"] else "")
    )
    return 0 if job["status"] == "succeeded" else 1


def _info(job: dict[str, Any]) -> str:
    p = job["progress"]
    parts = [job["status"]]
    if p["best_accuracy"] is not None:
        parts.append(f"best {p['best_accuracy']:.3f}")
    if p.get("eta_s") is not None:
        parts.append(f"ETA {_duration(p['eta_s'])}")
    stages = [f"#{t['trial']} {t['text']}" for t in p.get("trials_running", [])]
    return "  ".join(parts + stages[:3])


def _duration(s: float) -> str:
    m, sec = divmod(int(s), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s"


def pareto(client: Client, args: argparse.Namespace) -> int:
    front = client.json("GET", f"/v1/jobs/{args.job_id}/pareto")
    if args.json:
        print(json.dumps(front, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"job {args.job_id}: {len(front['data'])} Pareto points")
    for col in ("model", "val acc", "test acc", "latency ms", "size KB", "candidate"):
        table.add_column(col, justify="left" if col == "candidate" else "right")
    for p in front["data"]:
        lat = ", ".join(
            f"{k}: {v:.4f}{'' if p['latency_source'].get(k) == 'verified' else ' (search)'}"
            for k, v in p["latency_ms"].items()
        )
        test = p["test_accuracy"]
        table.add_row(
            str(p["model_id"]),
            f"{p['accuracy']:.3f}",
            f"{test:.3f}" if test is not None else "-",
            lat or "-",
            f"{p['size_bytes'] / 1024:.2f}",
            p["summary"],
        )
    Console().print(table)
    return 0


def pull(client: Client, args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    r = client.request("GET", f"/v1/models/{args.model_id}")
    out = Path(args.out or f"hwnas-model-{args.model_id}")
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        for name in zf.namelist():  # the service's own bundle, but stay inside `out` anyway
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise ServiceError(0, f"refusing the bundle entry {name!r}")
        zf.extractall(out)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    print(f"model {args.model_id}: {len(r.content)} bytes in {time.monotonic() - t0:.1f} s")
    print(f"unpacked into {out}: {', '.join(files)}")
    return 0
