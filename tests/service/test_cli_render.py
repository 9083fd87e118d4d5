"""What the remote CLI draws, without a service: the watch bar at 80 columns, the watch lines
for logs, the Pareto table's flags and legend, and where the URL and token come from."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from search_spaces import Candidate
from service.client import DEFAULT_URL, ServiceError, resolve_token, resolve_url
from service.remote.base import UserError
from service.remote.results import LEGEND, flags, pareto_table
from service.remote.transfer import _kind_and_file
from service.remote.watch import LineView, progress_line, render_bar, summary


def _job(status: str = "running", complete: int = 5, budget: int = 16, **p: Any) -> dict[str, Any]:
    progress = {
        "trials_complete": complete,
        "trials_failed": 0,
        "budget": budget,
        "best_accuracy": 0.912,
        "trials_running": [],
        "eta_s": 250.0,
    }
    return {"id": 3, "status": status, "error": None, "progress": {**progress, **p}}


def _stage(n: int, text: str) -> dict[str, Any]:
    return {"trial": n, "stage": "x", "step": None, "steps": None, "text": text, "at": ""}


def _draw(job: dict[str, Any], width: int = 80) -> list[str]:
    con = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    con.print(render_bar(job, con.width))
    return con.export_text().rstrip("\n").split("\n")


def test_the_bar_keeps_count_status_best_and_eta_at_80_columns() -> None:
    stages = [_stage(6, "training parent epoch 3/6 " + "x" * 120)] + [
        _stage(n, f"measuring latency {n}") for n in range(7, 13)
    ]
    job = _job(status="cancelling", complete=10000, budget=10000, trials_running=stages, eta_s=7300)
    job["id"] = 123456
    lines = _draw(job)
    assert all(len(line) <= 80 for line in lines), lines
    first = lines[0]
    for shown in ("job 123456", "10000/10000", "cancelling", "best 0.912", "ETA 2h01m"):
        assert shown in first
    assert lines[1].startswith("  #6 training parent epoch 3/6 xxx") and lines[1].endswith("…")
    assert lines[-1] == "  ... and 4 more running"  # 3 stage lines, then the rest counted
    assert len(lines) == 5


def test_a_finished_job_draws_a_full_bar() -> None:
    lines = _draw(_job(status="succeeded", complete=16, budget=16, eta_s=None))
    assert len(lines) == 1
    assert "16/16 succeeded" in lines[0] and "ETA" not in lines[0]
    bar = re.search(r"job 3 (\S+) 16/16", lines[0])
    assert bar is not None and set(bar.group(1)) == {"━"}  # all of it complete


def test_the_bar_gives_way_on_a_narrow_console() -> None:
    wide, narrow = _draw(_job(), 120)[0], _draw(_job(), 50)[0]
    assert len(narrow) <= 50 and "5/16" in narrow and "ETA 4m10s" in narrow
    assert wide.count("━") > narrow.count("━")


def test_the_progress_line() -> None:
    job = _job(trials_running=[_stage(6, "training parent epoch 3/6")])
    assert progress_line(job) == (
        "job 3 running: 5/16 complete, 0 failed, best 0.912, ETA 4m10s; "
        "#6 training parent epoch 3/6"
    )
    assert summary(_job(status="failed") | {"error": "boom"}) == (
        "job 3 failed: 5/16 trials, 0 failed; error: boom"
    )


def test_lines_come_at_each_change_and_a_new_eta_at_most_every_30_s() -> None:
    now = [0.0]
    out = io.StringIO()
    view = LineView(out, every_s=30, clock=lambda: now[0])
    view.update(_job(status="queued", complete=0, eta_s=None, best_accuracy=None))
    view.update(_job(status="queued", complete=0, eta_s=None, best_accuracy=None))  # same
    view.update(_job(complete=0, eta_s=None, best_accuracy=None))  # status
    now[0] = 5
    view.update(_job(complete=1, eta_s=300))  # count and best
    now[0] = 10
    view.update(_job(complete=1, eta_s=290))  # only the ETA: too soon
    now[0] = 40
    view.update(_job(complete=1, eta_s=260))  # only the ETA: 35 s later
    view.update(_job(status="succeeded", complete=16, eta_s=None))
    assert out.getvalue().splitlines() == [
        "job 3 queued: 0/16 complete, 0 failed",
        "job 3 running: 0/16 complete, 0 failed",
        "job 3 running: 1/16 complete, 0 failed, best 0.912, ETA 5m00s",
        "job 3 running: 1/16 complete, 0 failed, best 0.912, ETA 4m20s",
        "job 3 succeeded: 16/16 complete, 0 failed, best 0.912",
    ]


def _point(**kw: Any) -> dict[str, Any]:
    point = {
        "trial": 4,
        "model_id": "3-4",
        "accuracy": 0.9,
        "test_accuracy": 0.89,
        "latency_ms": {"x86/local": 0.5},
        "latency_source": {"x86/local": "verified"},
        "latency_tuning": {"x86/local": "metaschedule"},
        "speedup_vs_dense": {"x86/local": 1.8},
        "no_speedup": {"x86/local": False},
        "latency_disagrees": {"x86/local": False},
        "size_bytes": 2048,
        "summary": "mlp [32 w8a8 p0 r1] head w8a32",
    }
    return point | kw


def test_flags() -> None:
    assert flags(_point(), "x86/local") == []
    bad = _point(
        no_speedup={"x86/local": True},
        latency_disagrees={"x86/local": True},
        latency_tuning={"x86/local": "untuned"},
    )
    assert flags(bad, "x86/local") == ["no-speedup", "disagrees", "untuned"]
    assert flags(_point(latency_tuning={}), "x86/local") == ["untuned"]  # unknown


def test_the_pareto_table_shows_speedup_source_and_flags_per_profile() -> None:
    two = {"x86/local": 0.5, "arm/rasp4b64": 3.0}
    front = {
        "job_id": 3,
        "data": [
            _point(),
            _point(
                model_id="3-9",
                latency_ms=two,
                latency_source={"x86/local": "verified"},
                latency_tuning={"x86/local": "metaschedule", "arm/rasp4b64": "untuned"},
                speedup_vs_dense={"x86/local": 1.02},
                no_speedup={"x86/local": True},
            ),
        ],
    }
    con = Console(width=160, record=True, file=io.StringIO(), color_system=None)
    con.print(pareto_table(front))
    text = con.export_text()
    assert "1.80x" in text and "0.5 verified" in text
    assert "x86/local: no-speedup" in text and "arm/rasp4b64: untuned" in text
    assert "arm/rasp4b64: 3 search" in text and "arm/rasp4b64: -" in text  # not verified


def test_the_legend_explains_every_token_of_a_summary() -> None:
    """Each kind of token Candidate.summary() writes is one the legend explains."""
    comp = {"wbits": 8, "abits": 8, "prune": 0.25, "rank": 0.5}
    cand = Candidate(
        space="s",
        family="mbv2",
        input_shape=(1, 8, 8),
        num_classes=3,
        stem_width=8,
        stages=(
            {"depth": 2, "width": 24, "kernel": 3, "expand": 4, **comp, "sparsity": 0.5},
            {"width": 16, "kernel": 5, "expand": 6, "wformat": "ternary", "wbits": 2},
            {"width": 16, "kernel": 3, "wformat": "binary", "wbits": 1},
            {"width": 16, "kernel": 3, "wformat": "kmeans", "wbits": 4},
            {"depth": 2, "width": 32, "blocks": ({"wbits": 4}, {"wbits": 8})},
        ),
    )
    text = cand.summary()
    assert text == (
        "mbv2 [2x24 k3 e4 w8a8 p0.25 r0.5 s0.5, 16 k5 e6 ternary a32 p0 r1, "
        "16 k3 e1 binary a32 p0 r1, 16 k3 e1 km4 a32 p0 r1, 2x32 k3 e1 mixed] head w8a32"
    )
    legend = " ".join(LEGEND)
    tokens = {
        r"\d+x\d+": "DxW",
        r"\d+": "W alone",
        r"k\d": "kK",
        r"e\d": "eE",
        r"w\d+a\d+": "wB",
        r"ternary": "ternary",
        r"binary": "binary",
        r"km\d": "kmB",
        r"a\d+": "aB",
        r"p[\d.]+": "pP",
        r"r[\d.]+": "rR",
        r"s[\d.]+": "sS",
        r"mixed": "mixed",
        r"head": "head wXaY",
    }
    for word in re.findall(r"[\w.]+", text.split("[", 1)[1]):
        explained = [key for rx, key in tokens.items() if re.fullmatch(rx, word)]
        assert explained, f"{word!r} of the summary has no legend entry"
        assert all(f"{key} =" in legend or f"{key}:" in legend for key in explained), word


def test_where_the_url_comes_from(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWNAS_URL", "")
    assert resolve_url() == (DEFAULT_URL, "the default")
    monkeypatch.setenv("HWNAS_URL", "http://h:1/")
    assert resolve_url() == ("http://h:1", "HWNAS_URL")
    assert resolve_url("https://x") == ("https://x", "--url")
    monkeypatch.setenv("HWNAS_URL", "h:1")
    with pytest.raises(ServiceError, match="HWNAS_URL 'h:1': .*set HWNAS_URL"):
        resolve_url()


def test_where_the_token_comes_from(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("HWNAS_TOKEN", "HWNAS_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ServiceError, match="no token: pass --token or --token-file"):
        resolve_token()
    (tmp_path / "a").write_text("from-file-a\n")
    (tmp_path / "b").write_text("from-file-b")
    monkeypatch.setenv("HWNAS_TOKEN_FILE", str(tmp_path / "b"))
    assert resolve_token()[0] == "from-file-b"
    monkeypatch.setenv("HWNAS_TOKEN", "from-env")
    assert resolve_token()[0] == "from-env"
    assert resolve_token(None, str(tmp_path / "a"))[0] == "from-file-a"
    assert resolve_token("from-flag", str(tmp_path / "a")) == ("from-flag", "--token")
    with pytest.raises(ServiceError, match=f"cannot read the token file {tmp_path}/c"):
        resolve_token(None, str(tmp_path / "c"))
    (tmp_path / "d").write_text("  \n")
    with pytest.raises(ServiceError, match="token file .*/d .* is empty"):
        resolve_token(None, str(tmp_path / "d"))
    with pytest.raises(ServiceError, match="not a token"):
        resolve_token("two words")


def test_what_upload_takes() -> None:
    assert _kind_and_file(["data.npz"]) == ("dataset", Path("data.npz"))
    assert _kind_and_file(["dataset", "D.NPZ"]) == ("dataset", Path("D.NPZ"))
    assert _kind_and_file(["model.pt2"]) == ("network", Path("model.pt2"))
    with pytest.raises(UserError, match="ONNX is not taken: export with torch.export"):
        _kind_and_file(["model.onnx"])
    with pytest.raises(UserError, match="cannot upload a 'model'"):
        _kind_and_file(["model", "model.pt2"])
    with pytest.raises(UserError, match="a .pt2 file is a network, not a dataset"):
        _kind_and_file(["dataset", "model.pt2"])


class _FlakyClient:
    """A running job whose first event stream breaks; the second sees it end."""

    def __init__(self) -> None:
        self.streams = 0

    def json(self, method: str, path: str, **kw: Any) -> Any:
        return _job(complete=16, status="succeeded") if self.streams > 1 else _job()

    def events(self, job_id: int, max_s: float = 600) -> Any:
        self.streams += 1
        if self.streams == 1:
            raise ServiceError(0, "the event stream from http://x broke: reset")
        yield "job", _job(complete=9)
        yield "end", {"id": job_id, "status": "succeeded"}


def test_watch_reconnects_when_the_stream_breaks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from service.remote import watch as watching

    monkeypatch.setattr(watching.time, "sleep", lambda s: None)
    client = _FlakyClient()
    args = argparse.Namespace(job_id=3, progress="lines")
    assert watching.watch(client, args) == 0  # type: ignore[arg-type]
    out, err = capsys.readouterr()
    assert "broke: reset; reconnecting (1/5)" in err
    assert out.splitlines()[-2:] == [
        "job 3 succeeded: 16/16 complete, 0 failed, best 0.912",
        "job 3 succeeded: 16/16 trials, 0 failed",
    ]
    assert out.splitlines()[:2] == [
        "job 3 running: 5/16 complete, 0 failed, best 0.912, ETA 4m10s",
        "job 3 running: 9/16 complete, 0 failed, best 0.912, ETA 4m10s",
    ]
