"""``/docs`` (Swagger UI) and ``/redoc`` served from assets installed with the service.

FastAPI's own pages load Swagger UI and ReDoc from a CDN (and ReDoc's fonts from Google): with
no internet they render blank. The same pages here take their scripts, styles and icon from
the ``fastapi-offline`` package's copy of those projects' releases, under ``/docs-assets``, and
a Content-Security-Policy keeps the browser on this host (ReDoc's sidebar asks cdn.redoc.ly for
its logo whatever the options; the policy blocks it and ReDoc hides the image).
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs-assets"
# inline: Swagger UI's start-up script and both projects' styles; blob: ReDoc's web worker
CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline' blob:",
        "worker-src 'self' blob:",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
    ]
)


def install(app: FastAPI) -> None:
    """Serve the API's documentation pages and their assets from this host only.

    The app must be made with ``docs_url=None, redoc_url=None``.
    """
    static = files("fastapi_offline") / "static"
    app.mount(ASSETS, StaticFiles(directory=str(static)), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    title = app.title

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return _local(
            get_swagger_ui_html(
                openapi_url=openapi_url,
                title=f"{title}: API",
                swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
                swagger_css_url=f"{ASSETS}/swagger-ui.css",
                swagger_favicon_url=f"{ASSETS}/favicon.png",
                oauth2_redirect_url="/docs/oauth2-redirect",
                swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True},
            )
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def swagger_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return _local(
            get_redoc_html(
                openapi_url=openapi_url,
                title=f"{title}: API",
                redoc_js_url=f"{ASSETS}/redoc.standalone.js",
                redoc_favicon_url=f"{ASSETS}/favicon.png",
                with_google_fonts=False,
            )
        )


def _local(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CSP
    return page
