"""The HTTP API: wiring only. It reads publications and nothing else.

Run with ``python -m serving`` (or ``recforge serve``).
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from serving.config import ServingSettings, get_settings
from serving.metrics import ServingMetrics
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
    app.state.metrics = ServingMetrics(lambda: getattr(app.state, "store", None))

    @app.middleware("http")
    async def measure(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        app.state.metrics.observe(request, response.status_code, started)
        return response

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        """Prometheus exposition format."""
        return Response(app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(health.router)
    app.include_router(recommendations.router)
    app.include_router(items.router)
    return app
