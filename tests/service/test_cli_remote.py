"""The remote CLI as people run it: ``python -m service.cli VERB`` in a subprocess (stdout and
stderr pipes, not terminals) against a live API on 127.0.0.1 with one finished job (digits,
mlp_small, 3 trials, verified after the job) of the account ``viewer``.

Every verb against the service; what goes wrong (no service, a bad token or file, a closed
pipe) as one ``error:`` line and exit status 2, never a traceback.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.service.api import free_port
from tests.service.cli_service import ROOT, SPEC, cli_env, finished_job_service, run_cli
from workers.networks import zoo

HWNAS = f"{shlex.quote(sys.executable)} -m service.cli"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("cli")
    with finished_job_service(tmp, verify=True, verify_windows=1) as svc:
        yield svc


def ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return r.stdout


def refused(r: subprocess.CompletedProcess[str], *texts: str) -> str:
    """Exit status 2 and one clean ``error:`` line naming ``texts``."""
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.startswith("error: "), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    for text in texts:
        assert text in r.stderr
    return r.stderr


def test_trials_best_me_and_jobs(service: dict[str, Any]) -> None:
    job_id = service["job_id"]
    out = ok(run_cli(service, "trials", str(job_id)))
    assert f"job {job_id}: 3 of 3 trials" in out and "x86/local ms" in out
    assert out.count("complete") == 3 and "mlp [" in out
    page = json.loads(ok(run_cli(service, "trials", str(job_id), "--json")))
    assert [t["number"] for t in page["data"]] == [0, 1, 2]
    none = json.loads(ok(run_cli(service, "trials", str(job_id), "--state", "failed", "--json")))
    assert none["count"] == 0
    front = json.loads(ok(run_cli(service, "pareto", str(job_id), "--json")))["data"]
    top = max(front, key=lambda p: (p["accuracy"], -p["size_bytes"]))
    out = ok(run_cli(service, "best", str(job_id)))
    assert f"best by accuracy: model {top['model_id']} (job {job_id} trial {top['trial']})" in out
    assert "ms (verified), speedup vs dense" in out and top["summary"] in out
    smallest = json.loads(ok(run_cli(service, "best", str(job_id), "--by", "size", "--json")))
    assert smallest["size_bytes"] == min(p["size_bytes"] for p in front)
    out = ok(run_cli(service, "me"))
    assert out.startswith(f"viewer (account {service['user_id']}, active): admin no")
    assert re.search(r"active jobs +0 of 4", out) and "storage" in out
    assert json.loads(ok(run_cli(service, "me", "--json")))["name"] == "viewer"
    out = ok(run_cli(service, "jobs"))
    assert "cli-job" in out and "succeeded" in out and "3/3" in out


def test_pareto_shows_speedup_flags_and_a_legend(service: dict[str, Any]) -> None:
    out = ok(run_cli(service, "pareto", str(service["job_id"])))
    assert "Pareto points on x86/local" in out
    assert re.search(r"\d\.\d\dx", out), out  # speedup vs dense, verified after the job
    assert "verified" in out and "untuned" in out  # tuning "off": default schedules
    words = " ".join(out.split())  # the legend wraps at the width
    for legend in ("no-speedup =", "disagrees =", "untuned =", "DxW =", "rR =", "head wXaY"):
        assert legend in words
    assert max(len(line) for line in out.splitlines()) <= 80  # a pipe: rich's 80 columns


@pytest.mark.parametrize("reader", ["head -1", "true"])
def test_a_closed_pipe_is_not_an_error(service: dict[str, Any], reader: str) -> None:
    env = cli_env(service)
    for verb in ("pareto 1 --json", "trials 1", "watch 1"):
        r = subprocess.run(
            f"{HWNAS} {verb} | {reader}; exit ${{PIPESTATUS[0]}}",
            shell=True,
            executable="/bin/bash",
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0 and r.stderr == "", (verb, r.stderr)
        if reader == "head -1":
            assert r.stdout.count("\n") == 1 and (r.stdout == "{\n" or "json" not in verb)


def test_no_service_names_hwnas_url(service: dict[str, Any]) -> None:
    env = cli_env(None, HWNAS_URL="", HWNAS_TOKEN="x")  # the default URL, likely nobody there
    refused(run_cli(None, "jobs", env=env), "HWNAS_URL")
    gone = f"http://127.0.0.1:{free_port()}"
    err = refused(run_cli(None, "jobs", env=cli_env(None, HWNAS_URL=gone, HWNAS_TOKEN="x")))
    assert f"cannot reach {gone} (from HWNAS_URL; set HWNAS_URL or --url)" in err
    refused(run_cli(None, "me", env=cli_env(None, HWNAS_URL="localhost:1", HWNAS_TOKEN="x")))
    refused(run_cli(None, "me", env=cli_env(None, HWNAS_URL=gone)), "no token", "HWNAS_TOKEN")
    # a service that does not take the token: where it went and where it came from
    err = refused(run_cli(service, "me", "--token", "wrong"), "401", "--token", "HWNAS_URL")


def test_token_file_and_precedence(service: dict[str, Any], tmp_path: Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_text(service["token"] + "\n")
    bad.write_text("hwnas_not-a-real-token\n")
    url_only = cli_env(None, HWNAS_URL=service["url"])
    assert "viewer" in ok(run_cli(None, "me", "--token-file", str(good), env=url_only))
    env = url_only | {"HWNAS_TOKEN_FILE": str(good)}
    assert "viewer" in ok(run_cli(None, "me", env=env))
    env = url_only | {"HWNAS_TOKEN": "wrong", "HWNAS_TOKEN_FILE": str(good)}
    refused(run_cli(None, "me", env=env), "401", "HWNAS_TOKEN")  # the variable before its file
    assert "viewer" in ok(run_cli(None, "me", "--token-file", str(good), env=env))
    env = url_only | {"HWNAS_TOKEN": service["token"]}
    refused(run_cli(None, "me", "--token-file", str(bad), env=env), "401", f"--token-file {bad}")
    assert "viewer" in ok(
        run_cli(None, "me", "--token", service["token"], "--token-file", str(bad), env=env)
    )
    missing = tmp_path / "missing"
    refused(run_cli(None, "me", "--token-file", str(missing), env=url_only), str(missing))
    env = url_only | {"HWNAS_TOKEN_FILE": str(missing)}
    refused(run_cli(None, "me", env=env), str(missing), "HWNAS_TOKEN_FILE")


def test_submit_cancel_extend_delete(service: dict[str, Any], tmp_path: Path) -> None:
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps({**SPEC, "name": "to-cancel"}))
    job_id = int(ok(run_cli(service, "submit", str(spec))).strip())
    assert ok(run_cli(service, "cancel", str(job_id))) == f"job {job_id} cancelled\n"
    refused(run_cli(service, "cancel", str(job_id)), f"409: job {job_id} already ended")
    out = ok(run_cli(service, "extend", str(job_id), "--trials", "2", "--tune-s", "5"))
    assert out == (  # the budget is the complete trials (none) + 2
        f"job {job_id} queued: budget now 2 trials (0 complete, 2 more to run), tuning budget 5 s\n"
    )
    refused(run_cli(service, "delete", str(job_id)), "409", "cancel it")
    job = json.loads(ok(run_cli(service, "cancel", str(job_id), "--json")))
    assert job["status"] == "cancelled" and job["spec"]["budget"]["tune_s"] == 5
    watched = run_cli(service, "watch", str(job_id))
    assert watched.returncode == 1 and f"job {job_id} cancelled: 0/2 trials" in watched.stdout
    assert ok(run_cli(service, "delete", str(job_id))) == f"job {job_id} deleted\n"
    refused(run_cli(service, "delete", str(job_id)), f"404: job {job_id} not found")
    jobs = json.loads(ok(run_cli(service, "jobs", "--json")))["data"]
    assert [j["id"] for j in jobs] == [service["job_id"]]
    refused(run_cli(service, "extend", "1", "--trials", "0"), "422", "trials")


def test_submit_refuses_bad_files(service: dict[str, Any], tmp_path: Path) -> None:
    refused(run_cli(service, "submit", str(tmp_path / "nope.json")), "nope.json", "no such file")
    (tmp_path / "bad.json").write_text("{'name': 1}")
    refused(run_cli(service, "submit", str(tmp_path / "bad.json")), "bad.json is not JSON")
    (tmp_path / "list.json").write_text("[1]")
    refused(run_cli(service, "submit", str(tmp_path / "list.json")), "a JSON object")
    refused(run_cli(service, "submit", str(tmp_path)), "is a directory")
    (tmp_path / "bad.json").write_text(json.dumps({**SPEC, "budget": {"trials": 0}}))
    refused(run_cli(service, "submit", str(tmp_path / "bad.json")), "422", "budget.trials")


def test_report_saves_the_page(service: dict[str, Any], tmp_path: Path) -> None:
    job_id = service["job_id"]
    out = ok(run_cli(service, "report", str(job_id), cwd=tmp_path))
    page = tmp_path / f"hwnas-job-{job_id}-report.html"
    assert f"job {job_id}'s report: hwnas-job-{job_id}-report.html" in out
    html = page.read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and "cli-job" in html
    browser = tmp_path / "browser.sh"  # what --open runs ($BROWSER): it notes the page
    browser.write_text(f'#!/bin/sh\necho "$1" > {tmp_path / "opened"}\n')
    browser.chmod(0o755)
    env = cli_env(service, BROWSER=str(browser))
    ok(run_cli(None, "report", str(job_id), "-o", str(tmp_path / "r.html"), "--open", env=env))
    assert "cli-job" in (tmp_path / "r.html").read_text()
    assert (tmp_path / "opened").read_text().strip() == (tmp_path / "r.html").as_uri()
    refused(
        run_cli(service, "report", str(job_id), "-o", str(tmp_path / "no" / "r.html")),
        "does not exist",
    )
    refused(run_cli(service, "report", "999"), "404: job 999 not found")


def test_pull_refuses_places_it_cannot_write(service: dict[str, Any], tmp_path: Path) -> None:
    model = json.loads(ok(run_cli(service, "best", "1", "--json")))["model_id"]
    refused(
        run_cli(service, "pull", model, "-o", str(tmp_path / "a" / "b")),
        f"the directory {tmp_path / 'a'} does not exist",
    )
    (tmp_path / "file").write_text("")
    refused(run_cli(service, "pull", model, "-o", str(tmp_path / "file")), "not a directory")
    out = ok(run_cli(service, "pull", model, "-o", str(tmp_path / "m")))
    assert "card.json" in out and (tmp_path / "m" / "model.onnx").is_file()


def _npz(path: Path, n: int = 60) -> Path:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (n, 1, 8, 8), dtype=np.uint8)
    np.savez(path, x_train=x, y_train=np.arange(n) % 3, x_test=x[:30], y_test=np.arange(30) % 3)
    return path


def test_upload(service: dict[str, Any], tmp_path: Path) -> None:
    data = _npz(tmp_path / "tiny.npz")
    out = ok(run_cli(service, "upload", str(data)))
    assert out.startswith("dataset user/tiny: ") and "(1, 8, 8), 3 classes" in out
    out = ok(run_cli(service, "upload", "dataset", str(data), "--name", "tiny-2", "--json"))
    assert json.loads(out)["name"] == "user/tiny-2"
    refused(run_cli(service, "upload", str(data)), "409: dataset user/tiny already exists")
    (tmp_path / "data.csv").write_text("1,2\n")
    refused(
        run_cli(service, "upload", str(tmp_path / "data.csv"), "--name", "x"),
        "take an .npz dataset, a .zip of image folders or a .pt2 network",
    )
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    refused(run_cli(service, "upload", str(tmp_path / "junk.npz")), "422")
    refused(run_cli(service, "upload", str(tmp_path / "gone.npz")), "gone.npz: no such file")
    refused(run_cli(service, "upload", str(data), "--name", "Bad Name"), "pass --name")
    net = tmp_path / "concat.pt2"
    torch.manual_seed(0)
    model = zoo.ConcatNet(3, in_channels=1).eval()
    ep = torch.export.export(
        model, (torch.zeros(2, 1, 8, 8),), dynamic_shapes={"x": {0: torch.export.Dim("b")}}
    )
    torch.export.save(ep, net)
    out = ok(run_cli(service, "upload", str(net), "--mean", "0.5", "--std", "0.25"))
    assert out.startswith("network user/concat: ") and "5 layers in 5 groups (a, b, mix" in out
    assert '"network": "user/concat"' in out
    refused(run_cli(service, "upload", str(net), "--name", "c2", "--mean", "0.5"), "--std")


def test_tokens(service: dict[str, Any]) -> None:
    out = ok(run_cli(service, "tokens", "list"))
    assert "(this one)" in out and "tests" in out  # the token of HWNAS_TOKEN
    made = run_cli(service, "tokens", "create", "--name", "ci", "--days", "7")
    secret = ok(made).strip()
    assert re.fullmatch(r"[\x21-\x7e]{20,}", secret) and "shown this once" in made.stderr
    as_new = cli_env(service, HWNAS_TOKEN=secret)
    assert "viewer" in ok(run_cli(None, "me", env=as_new))
    tokens = json.loads(ok(run_cli(service, "tokens", "list", "--json")))["data"]
    new = next(t for t in tokens if t["name"] == "ci")
    assert secret.startswith(new["prefix"]) and new["revoked_at"] is None
    assert (
        ok(run_cli(service, "tokens", "revoke", str(new["id"]))) == f"token {new['id']} revoked\n"
    )
    refused(run_cli(None, "me", env=as_new), "401")
    refused(run_cli(service, "tokens", "revoke", "99999"), "404")
    assert "revoked" in ok(run_cli(service, "tokens", "list"))


def test_watch_a_finished_job_in_lines(service: dict[str, Any]) -> None:
    job_id = service["job_id"]
    out = ok(run_cli(service, "watch", str(job_id)))
    assert out.splitlines() == [
        f"job {job_id} succeeded: 3/3 complete, 0 failed, best {_best(service)}",
        f"job {job_id} succeeded: 3/3 trials, 0 failed",
    ]


def _best(service: dict[str, Any]) -> str:
    jobs = json.loads(ok(run_cli(service, "jobs", "--json")))["data"]
    job = next(j for j in jobs if j["id"] == service["job_id"])
    return f"{job['progress']['best_accuracy']:.3f}"


def test_watch_a_finished_job_with_the_bar_at_80_columns(service: dict[str, Any]) -> None:
    env = cli_env(service, COLUMNS="80")
    r = run_cli(None, "watch", str(service["job_id"]), "--progress", "bar", env=env)
    assert ok(r) == f"job {service['job_id']} succeeded: 3/3 trials, 0 failed\n"
    plain = re.sub(r"\x1b\[[0-9;]*m", "", r.stderr)  # no colours
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "\n", plain)  # each redraw on its own
    frames = [line for line in screen.split("\n") if line.strip()]
    assert frames and all(len(line) <= 80 for line in frames)
    last = frames[-1]
    assert re.fullmatch(rf"job {service['job_id']} ━+ 3/3 succeeded  best \d\.\d{{3}}", last)
