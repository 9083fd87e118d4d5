"""FastAPI app factory."""

from __future__ import annotations

from fastapi import FastAPI

from service.api.routes import catalog, datasets, jobs, models
from service.db.migrate import upgrade
from service.settings import Settings, get_settings


def create_app(settings: Settings | None = None, *, migrate: bool = True) -> FastAPI:
    """The API app. Applies the service's migrations at creation unless ``migrate`` is False."""
    settings = settings or get_settings()
    if migrate:
        upgrade(settings.database_url)
    app = FastAPI(
        title="hwnas",
        version="0.1.0",
        summary="Hardware-aware compression search: submit jobs, read Pareto fronts, pull models.",
    )
    app.state.settings = settings
    app.include_router(jobs.router)
    app.include_router(models.router)
    app.include_router(datasets.router)
    app.include_router(catalog.router)
    return app
