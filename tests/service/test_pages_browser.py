"""The service's pages as a person sees them, in Debian's headless Chromium: /docs and /redoc
render from this host alone (no CDN), and the Optuna dashboard signs a person in with a token
and lists their own studies by job name. Every request the pages make must go to the service."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from service.scheduler.study import open_study
from service.schemas import JobSpec
from tests.service.api import admin_client, api_settings, as_token, live_server, new_user
from tests.service.browser import launch, needs_chromium

pytestmark = needs_chromium
JOB = {
    "name": "alice-search",
    "dataset": "digits",
    "space": "mlp_small",
    "profiles": ["x86/local"],
    "objectives": ["accuracy", "latency"],
    "budget": {"trials": 2, "tune_s": 0},
    "tuning": "off",
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("pages")
    url = f"sqlite:///{tmp / 'hwnas.db'}"
    settings = api_settings(url, tmp)
    with admin_client(settings) as admin:
        _, alice = new_user(admin, "alice")
        _, bob = new_user(admin, "bob")
        for token, name in ((alice, "alice-search"), (bob, "bob-search")):
            r = admin.post("/v1/jobs", json={**JOB, "name": name}, headers=as_token(admin, token))
            assert r.status_code == 201, r.text
            study = open_study(url, r.json()["id"], JobSpec.model_validate(r.json()["spec"]))
            study.tell(study.ask(), [0.9, 0.5])
    with live_server(settings) as base:
        yield {"base": base, "alice": alice, "tmp": tmp}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


def _recording(browser: Any) -> tuple[Any, list[str]]:
    """A new page and the URLs of the requests it makes that reach the network (a request the
    page's Content-Security-Policy blocks never leaves the browser)."""
    page = browser.new_page()
    urls: list[str] = []
    page.on("requestfinished", lambda req: urls.append(req.url))
    page.on(
        "requestfailed",
        lambda req: None if _blocked_by_csp(req.failure) else urls.append(req.url),
    )
    return page, urls


@pytest.mark.parametrize(("path", "rendered"), [("/docs", ".opblock"), ("/redoc", "h1")])
def test_api_docs_render_offline(
    site: dict[str, Any], browser: Any, path: str, rendered: str
) -> None:
    page, urls = _recording(browser)
    response = page.goto(site["base"] + path)
    assert response is not None and response.status == 200
    page.wait_for_selector(rendered, timeout=30_000)  # drawn by the script served from here
    assert "hwnas" in page.inner_text("body")
    if path == "/docs":
        assert page.locator(".opblock").count() >= 20  # every operation listed
    page.screenshot(path=str(site["tmp"] / f"{path.strip('/')}.png"))
    assert not _foreign(urls, site["base"]), urls


def _blocked_by_csp(failure: str | None) -> bool:
    return (failure or "").lower() in ("csp", "net::err_blocked_by_csp")


def _foreign(urls: list[str], base: str) -> list[str]:
    """Requests that left the service (data: and this origin's blob: URLs never do)."""
    return [u for u in urls if not u.startswith((base, "data:", f"blob:{base}"))]


def test_the_dashboard_signs_in_with_a_token_and_lists_ones_own_studies(
    site: dict[str, Any], browser: Any
) -> None:
    page, urls = _recording(browser)
    page.goto(site["base"] + "/dashboard/")
    assert "/dashboard/login" in page.url and "bundle.js" not in page.content()
    page.fill("input[name=token]", site["alice"])
    page.click("button[type=submit]")
    page.wait_for_selector("text=alice-search", timeout=30_000)  # the study list, by job name
    text = page.inner_text("body")
    assert "(alice)" in text and "bob-search" not in text
    page.screenshot(path=str(site["tmp"] / "dashboard.png"), full_page=True)
    assert not _foreign(urls, site["base"]), urls
