"""A finished job seen the ways people see it: its report page in headless Chromium, its plot,
and the remote CLI (submit, jobs, watch, pareto, pull) against a live API on 127.0.0.1.

One real job (digits, mlp_small, 3 trials, real training and TVM probes with default schedules)
is run once for the module through the controller, as an ordinary account.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.cli import main as hwnas
from tests.service.browser import launch, needs_chromium
from tests.service.cli_service import finished_job_service

SPEC = {
    "name": "report-job",
    "dataset": "digits",
    "space": "mlp_small",
    "space_overrides": {"depth": [1], "width": [16, 32]},
    "profiles": ["x86/local"],
    "objectives": ["accuracy", "latency@x86/local", "size"],
    "constraints": ["size <= 4 KB"],
    "budget": {"trials": 3, "tune_s": 0},
    "training": {"epochs": 2, "finetune_epochs": 1},
    "tuning": "off",
    "prefilter": False,
    "seed": 2,
}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with finished_job_service(tmp_path_factory.mktemp("report"), SPEC, verify=False) as live:
        yield live


def _cli(
    service: dict[str, Any], *argv: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    code = hwnas([*argv, "--url", service["url"], "--token", service["token"]])
    return code, capsys.readouterr().out


def test_the_cli_lists_watches_and_pulls(
    service: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    job_id = service["job_id"]
    code, out = _cli(service, "jobs", "--json", capsys=capsys)
    assert code == 0 and [j["id"] for j in json.loads(out)["data"]] == [job_id]
    code, out = _cli(service, "watch", str(job_id), capsys=capsys)  # an ended job: at once
    assert code == 0 and f"job {job_id} succeeded: 3/3 trials" in out
    code, out = _cli(service, "pareto", str(job_id), "--json", capsys=capsys)
    front = json.loads(out)["data"]
    assert code == 0 and front and all(p["size_bytes"] <= 4000 for p in front)
    model = front[0]["model_id"]
    code, out = _cli(service, "pull", model, "-o", str(tmp_path / "m"), capsys=capsys)
    assert code == 0 and {"card.json", "model.onnx", "model.pt"} <= {
        p.name for p in (tmp_path / "m").iterdir()
    }
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    assert card["metrics"]["size_bytes"] == front[0]["size_bytes"]
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps({**SPEC, "name": "from-the-cli"}))
    code, out = _cli(service, "submit", str(spec), capsys=capsys)
    new_id = int(out.strip())
    assert code == 0 and new_id != job_id
    code, out = _cli(service, "jobs", "--status", "queued", capsys=capsys)
    assert code == 0 and "from-the-cli" in out
    # refused: the service's reason, exit status 2
    code = hwnas(["pull", "999-0", "--url", service["url"], "--token", service["token"]])
    assert code == 2 and "404: model 999-0 not found" in capsys.readouterr().err
    code = hwnas(["jobs", "--url", service["url"], "--token", "wrong"])
    assert code == 2 and "401" in capsys.readouterr().err


def test_report_png_is_the_front(service: dict[str, Any]) -> None:
    import httpx

    r = httpx.get(
        f"{service['url']}/v1/jobs/{service['job_id']}/report.png",
        headers={"Authorization": f"Bearer {service['token']}"},
    )
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", r.content[16:24])
    assert width > 1000 and height > 300  # three objective pairs side by side


@needs_chromium
def test_report_page_in_headless_chromium(service: dict[str, Any], tmp_path: Path) -> None:
    import httpx
    from playwright.sync_api import sync_playwright

    auth = {"Authorization": f"Bearer {service['token']}"}
    base, job_id = service["url"], service["job_id"]
    front = httpx.get(f"{base}/v1/jobs/{job_id}/pareto", headers=auth).json()["data"]
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(extra_http_headers=auth)
            response = page.goto(f"{base}/v1/jobs/{job_id}/report.html")
            assert response is not None and response.status == 200
            assert page.title() == f"hwnas job {job_id}: report-job"
            rows = page.locator("#points tbody tr")
            assert rows.count() == len(front)
            first = rows.nth(0).locator("td")
            assert first.nth(1).inner_text() == front[0]["model_id"]
            assert float(first.nth(2).inner_text()) == pytest.approx(front[0]["accuracy"], abs=1e-4)
            width = page.eval_on_selector("#front", "img => img.naturalWidth")
            assert width > 1000  # the plot decoded and drawn
            assert "succeeded" in page.inner_text("#summary")
            assert "complete 3" in page.inner_text("#trials")
            assert page.locator("#caches tbody tr").count() == 3
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            assert (tmp_path / "report.png").stat().st_size > 20_000
            # without a token the page is not served
            anon = browser.new_page()
            denied = anon.goto(f"{base}/v1/jobs/{job_id}/report.html")
            assert denied is not None and denied.status == 401
        finally:
            browser.close()
