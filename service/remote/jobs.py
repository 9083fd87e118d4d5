"""Jobs over HTTP: ``submit``, ``jobs``, ``cancel``, ``delete``, ``extend``, ``trials``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from service.client import Client
from service.remote.base import UserError, acc, console, kb, ms, print_json
from service.remote.watch import watch


def read_spec(path: str) -> dict[str, Any]:
    """The job spec in the JSON file ``path`` (``-``: stdin).

    Raises:
        UserError: the file cannot be read, is not JSON or not a JSON object.
    """
    name = "stdin" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except IsADirectoryError:
        raise UserError(f"{name} is a directory, not a job spec (a JSON file)") from None
    except FileNotFoundError:
        raise UserError(f"{name}: no such file (the job spec, a JSON file)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {name}: {getattr(e, 'strerror', None) or e}") from None
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{name} is not JSON: {e}") from None
    if not isinstance(spec, dict):
        raise UserError(f"{name}: a job spec is a JSON object, not {type(spec).__name__}")
    return spec


def submit(client: Client, args: argparse.Namespace) -> int:
    """POST /v1/jobs; prints the new job's id (then watches it with ``--watch``)."""
    job = client.json("POST", "/v1/jobs", json=read_spec(args.spec))
    print(job["id"], flush=True)
    if args.watch:
        args.job_id = job["id"]
        return watch(client, args)
    return 0


def jobs(client: Client, args: argparse.Namespace) -> int:
    """GET /v1/jobs: a table, newest first."""
    params: dict[str, Any] = {"limit": args.limit}
    for key in ("status", "name", "owner"):
        if getattr(args, key):
            params[key] = getattr(args, key)
    page = client.json("GET", "/v1/jobs", params=params)
    if args.json:
        print_json(page)
        return 0
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{len(page['data'])} of {page['count']} jobs")
    for col in ("id", "name", "owner", "status", "trials", "best acc", "created"):
        table.add_column(col, justify="right" if col in ("id", "trials", "best acc") else "left")
    for j in page["data"]:
        p = j["progress"]
        cells = (
            str(j["id"]),
            j["name"],
            j["owner"],
            j["status"],
            f"{p['trials_complete']}/{p['budget']}",
            acc(p["best_accuracy"]),
            j["created_at"][:19].replace("T", " "),
        )
        table.add_row(*(Text(c) for c in cells))
    console().print(table)
    return 0


def cancel(client: Client, args: argparse.Namespace) -> int:
    """POST /v1/jobs/{id}/cancel: a queued job at once, a running one after its trials stop."""
    job = client.json("POST", f"/v1/jobs/{args.job_id}/cancel")
    if args.json:
        print_json(job)
    elif job["status"] == "cancelled":
        print(f"job {job['id']} cancelled")
    else:
        print(f"job {job['id']} {job['status']}: it ends when its running trials have stopped")
    return 0


def delete(client: Client, args: argparse.Namespace) -> int:
    """DELETE /v1/jobs/{id}: an ended job, its trials, study and model bundles."""
    client.request("DELETE", f"/v1/jobs/{args.job_id}")
    print(f"job {args.job_id} deleted")
    return 0


def extend(client: Client, args: argparse.Namespace) -> int:
    """POST /v1/jobs/{id}/extend: more trials (and tuning seconds) for an ended job."""
    body: dict[str, Any] = {"trials": args.trials}
    if args.tune_s is not None:
        body["tune_s"] = args.tune_s
    job = client.json("POST", f"/v1/jobs/{args.job_id}/extend", json=body)
    if args.json:
        print_json(job)
        return 0
    p = job["progress"]
    tune_s = job["spec"]["budget"].get("tune_s")
    print(
        f"job {job['id']} {job['status']}: budget now {p['budget']} trials "
        f"({p['trials_complete']} complete, {args.trials} more to run)"
        + (f", tuning budget {tune_s:g} s" if args.tune_s and tune_s is not None else "")
    )
    return 0


TRIAL_STATES = ("running", "complete", "failed", "cancelled", "rejected", "pruned")


def trials(client: Client, args: argparse.Namespace) -> int:
    """GET /v1/jobs/{id}/trials: number, state, summary, accuracy, latency, size, error."""
    params: dict[str, Any] = {"limit": args.limit}
    if args.state:
        params["state"] = args.state
    page = client.json("GET", f"/v1/jobs/{args.job_id}/trials", params=params)
    if args.json:
        print_json(page)
        return 0
    from rich.table import Table
    from rich.text import Text

    profiles = sorted(
        {p for t in page["data"] for p in (t.get("metrics") or {}).get("latency_ms", {})}
    )
    one = len(profiles) == 1
    table = Table(title=f"job {args.job_id}: {len(page['data'])} of {page['count']} trials")
    table.add_column("#", justify="right")
    table.add_column("state")
    table.add_column("summary", ratio=3)
    table.add_column("val acc", justify="right")
    table.add_column(f"{profiles[0]} ms" if one else "latency ms", justify="right")
    table.add_column("size KB", justify="right")
    table.add_column("error", ratio=2)
    for t in page["data"]:
        m = t.get("metrics") or {}
        lat = m.get("latency_ms") or {}
        state = t["state"]
        if t.get("stage"):
            state += f" ({t['stage']['text']})"
        cells = (
            str(t["number"]),
            state,
            t["summary"],
            acc(m.get("accuracy")),
            "\n".join(ms(v) if one else f"{p} {ms(v)}" for p, v in lat.items()) or "-",
            kb(m.get("size_bytes")),
            (t.get("error") or "")[:300],
        )
        table.add_row(*(Text(c) for c in cells))
    console().print(table)
    return 0
