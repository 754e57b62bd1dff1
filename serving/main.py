"""The HTTP API: wiring only. It reads publications and nothing else.

Run with ``python -m serving`` (or ``recforge serve``).
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from serving.config import ServingSettings, get_settings
from serving.publication import PublicationStore
from serving.routers import health, items, recommendations


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        store = PublicationStore(settings.published_dir, settings.reload_interval_seconds)
        store.start()
        app.state.store = store
        try:
            yield
        finally:
            store.stop()

    app = FastAPI(title="recforge serving", version="0.1.0", lifespan=lifespan)
    app.include_router(health.router)
    app.include_router(recommendations.router)
    app.include_router(items.router)
    return app
