"""``hwnas watch JOB_ID``: follow a job to its end over its event stream.

In a terminal (stdout and stderr both) a bar on stderr: ``job 3 ━━━━━━ 5/16 running best
0.912 ETA 4m10s``, the running trials' stages on the lines under it (cut to the width). Else,
plain lines on stdout, one whenever the status, counts or best accuracy change (and at most
every :data:`LINE_EVERY_S` for a new ETA or stage), for logs::

    job 3 running: 5/16 complete, 0 failed, best 0.912, ETA 4m10s; #6 training parent epoch 3/6

Either way the last line is the summary: ``job 3 succeeded: 16/16 trials, 0 failed``. Exit
status 0 when the job succeeded, 1 when it ended otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import IO, Any, Protocol

from service.client import Client, ServiceError
from service.remote.base import UserError, console, duration

ENDED = ("succeeded", "failed", "cancelled")
STREAM_S = 300  # one event stream's length; the watch reconnects after it
RETRIES = 5  # lost connections in a row before giving up
LINE_EVERY_S = 30.0
MAX_STAGE_LINES = 4
BAR_WIDTH = (8, 30)  # the bar's narrowest and widest


class View(Protocol):
    def update(self, job: dict[str, Any]) -> None: ...

    def note(self, text: str) -> None: ...

    def __enter__(self) -> View: ...

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...


def watch(client: Client, args: argparse.Namespace) -> int:
    """Follow the job's event stream (reconnecting when it closes) until the job ends."""
    job_id = int(args.job_id)
    job: dict[str, Any] = client.json("GET", f"/v1/jobs/{job_id}")
    with _view(getattr(args, "progress", "auto")) as view:
        view.update(job)
        failures = 0
        while job["status"] not in ENDED:
            try:
                job = _follow(client, job_id, job, view)
                failures = 0
            except ServiceError as e:
                failures += 1
                if e.status or failures > RETRIES:
                    raise
                view.note(f"{e}; reconnecting ({failures}/{RETRIES})")
                time.sleep(min(30, 2**failures))
    print(summary(job), flush=True)
    return 0 if job["status"] == "succeeded" else 1


def _follow(client: Client, job_id: int, job: dict[str, Any], view: View) -> dict[str, Any]:
    """One event stream to its end (the job's or the stream's); then the job as it is now."""
    for name, data in client.events(job_id, max_s=STREAM_S):
        if name == "job":
            if data.get("status") == "deleted":
                raise UserError(f"job {job_id} was deleted while watched")
            job = data
            view.update(job)
        elif name == "end":
            break
    job = client.json("GET", f"/v1/jobs/{job_id}")
    view.update(job)
    return job


def _view(mode: str) -> View:
    if mode == "auto":
        mode = "bar" if sys.stdout.isatty() and sys.stderr.isatty() else "lines"
    if mode == "bar":
        return BarView(console(stderr=True, force_terminal=True))
    return LineView(sys.stdout)


def summary(job: dict[str, Any]) -> str:
    """``job 3 succeeded: 16/16 trials, 0 failed`` (and the job's error)."""
    p = job["progress"]
    text = (
        f"job {job['id']} {job['status']}: {p['trials_complete']}/{p['budget']} trials, "
        f"{p['trials_failed']} failed"
    )
    return text + (f"; error: {job['error']}" if job.get("error") else "")


def _stages(job: dict[str, Any]) -> list[str]:
    return [f"#{t['trial']} {t['text']}" for t in job["progress"].get("trials_running") or []]


def _facts(job: dict[str, Any]) -> list[str]:
    """Best accuracy and ETA, as shown beside the counts."""
    p = job["progress"]
    out = []
    if p.get("best_accuracy") is not None:
        out.append(f"best {p['best_accuracy']:.3f}")
    if p.get("eta_s") is not None and job["status"] not in ENDED:
        out.append(f"ETA {duration(p['eta_s'])}")
    return out


def progress_line(job: dict[str, Any]) -> str:
    """The job in one line (line mode)."""
    p = job["progress"]
    parts = [
        f"{p['trials_complete']}/{p['budget']} complete",
        f"{p['trials_failed']} failed",
        *_facts(job),
    ]
    line = f"job {job['id']} {job['status']}: {', '.join(parts)}"
    stages = _stages(job)
    return line + ("; " + "; ".join(stages) if stages else "")


def render_bar(job: dict[str, Any], width: int) -> Any:
    """The bar view of ``job`` for a console ``width`` columns wide: a first line the count,
    status, best and ETA never leave (the bar gives way first), then a line per running
    trial's stage, cut at the width."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    p = job["progress"]
    head = f"job {job['id']} "
    tail = f" {p['trials_complete']}/{p['budget']} " + "  ".join([job["status"], *_facts(job)])
    bar_width = max(BAR_WIDTH[0], min(BAR_WIDTH[1], width - len(head) - len(tail) - 1))
    line = Table.grid()
    line.add_column(no_wrap=True)
    line.add_column(no_wrap=True, width=bar_width)
    line.add_column(no_wrap=True, overflow="ellipsis")
    bar = ProgressBar(
        total=max(1, p["budget"]), completed=min(p["trials_complete"], p["budget"]), width=bar_width
    )
    line.add_row(Text(head, style="bold"), bar, Text(tail))
    rows: list[Any] = [line]
    stages = _stages(job)
    shown = stages if len(stages) <= MAX_STAGE_LINES else stages[: MAX_STAGE_LINES - 1]
    for text in shown:
        rows.append(Text("  " + text, no_wrap=True, overflow="ellipsis", style="dim"))
    if len(shown) < len(stages):
        rows.append(Text(f"  ... and {len(stages) - len(shown)} more running", style="dim"))
    return Group(*rows)


class BarView:
    """The bar, redrawn in place on a (forced) terminal console."""

    def __init__(self, con: Any) -> None:
        from rich.live import Live

        self.console = con
        self._job: dict[str, Any] | None = None
        self._live = Live(console=con, auto_refresh=False, transient=False)

    def __enter__(self) -> BarView:
        self._live.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._job is not None:
            self._live.update(render_bar(self._job, self.console.width), refresh=True)
        self._live.stop()

    def update(self, job: dict[str, Any]) -> None:
        self._job = job
        self._live.update(render_bar(job, self.console.width), refresh=True)

    def note(self, text: str) -> None:
        from rich.text import Text

        self._live.console.print(Text(text, style="yellow"))


class LineView:
    """One line per change worth a line: status, counts or best at once; a new ETA or stage
    at most every ``every_s``."""

    def __init__(
        self,
        out: IO[str],
        every_s: float = LINE_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out, self.every_s, self.clock = out, every_s, clock
        self._key: tuple[Any, ...] | None = None
        self._line = ""
        self._at = 0.0

    def __enter__(self) -> LineView:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        pass

    def update(self, job: dict[str, Any]) -> None:
        p = job["progress"]
        key = (
            job["status"],
            p["trials_complete"],
            p["trials_failed"],
            p["budget"],
            p.get("best_accuracy"),
        )
        line, now = progress_line(job), self.clock()
        if key != self._key or (line != self._line and now - self._at >= self.every_s):
            print(line, file=self.out, flush=True)
            self._key, self._line, self._at = key, line, now

    def note(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)
