"""FastAPI app factory."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.trustedhost import TrustedHostMiddleware

from service.api import docs, errors
from service.api.bodies import JsonBodyGuard
from service.api.routes import (
    audit,
    catalog,
    datasets,
    events,
    jobs,
    models,
    networks,
    ops,
    reports,
    users,
)
from service.dashboard import DashboardGate
from service.db.migrate import upgrade
from service.db.session import get_sessionmaker
from service.db.uploads import adopt_legacy
from service.settings import Settings, get_settings


def create_app(settings: Settings | None = None, *, migrate: bool = True) -> FastAPI:
    """The API app. Applies the service's migrations at creation unless ``migrate`` is False."""
    settings = settings or get_settings()
    if migrate:
        upgrade(settings.database_url)
        with get_sessionmaker(settings.database_url)() as session:
            adopt_legacy(session=session, settings=settings)
    app = FastAPI(
        title="hwnas",
        version="0.1.0",
        summary="Hardware-aware compression search: submit jobs, read Pareto fronts, pull models.",
        description="Every route but /healthz needs `Authorization: Bearer <token>`. Your jobs, "
        "uploads and models are yours: another account's ids answer 404 (an admin sees all).",
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.add_middleware(DashboardGate, settings=settings)  # /dashboard/, /api/...: its own paths
    app.add_middleware(JsonBodyGuard, max_bytes=settings.max_json_bytes)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)
    errors.install(app)
    errors.document_body_limit(app)
    docs.install(app)
    for module in (jobs, events, reports, models, datasets, networks, users, audit, catalog, ops):
        app.include_router(module.router)
    return app
