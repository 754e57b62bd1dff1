"""The HTTP API: wiring only. It reads publications and nothing else.

Run with ``python -m serving`` (or ``recforge serve``).
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.routing import request_response

from serving.config import ServingSettings, get_settings
from serving.docs import add_offline_docs
from serving.errors import install_error_handlers
from serving.failures import FailureLog
from serving.impressions import start_impression_log
from serving.impressions.request_ids import RequestIds
from serving.metrics import MetricsMiddleware, ServingMetrics
from serving.routers import events, health, items, recommendations
from serving.session import open_sessions
from serving.store import PublicationStore
from serving.variants import ExperimentRouter


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        _limit_faiss_threads(settings.faiss_threads)
        store = PublicationStore(settings.published_dir, settings.reload_interval_seconds)
        store.router = app.state.router  # experiments are refreshed on the store's watcher, after CURRENT
        app.state.store = store
        store.start()
        app.state.impressions = start_impression_log(settings, app.state.request_ids.prefix, app.state.metrics.registry)
        app.state.failures.start()
        await app.state.sessions.start()
        collector = await _start_collector(app, settings)
        try:
            yield
        finally:
            if collector is not None:
                await collector.stop()
            if app.state.impressions is not None:
                app.state.impressions.stop()  # flushes the queue and seals every interval
            await app.state.sessions.stop()
            store.stop()
            app.state.failures.stop()

    app = FastAPI(
        title="recforge serving",
        version="0.1.0",
        description=API_DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by add_offline_docs, with local assets
        redoc_url=None,
    )
    app.state.collector = None  # set by the lifespan when an app key is configured
    app.state.sessions = open_sessions(settings)  # fed by the collector, read by recommendations
    app.state.session_settings = settings
    # The user-id hasher when pseudonymisation is on (serving/pseudonyms.py): the recommendations
    # endpoint looks the pseudonym up, the collector stores it.
    app.state.pseudonymize = settings.pseudonymizer()
    app.state.metrics = ServingMetrics(lambda: getattr(app.state, "store", None))
    app.state.request_ids = RequestIds()  # one prefix per process: the impression files carry it too
    app.state.impressions = None  # the lifespan starts the log unless its sink is 'off'
    # Online experiments (serving/variants.py): which publication answers each user; exploration's epsilon.
    app.state.router = ExperimentRouter(settings, app.state.metrics.registry)
    app.state.exploration_epsilon = settings.exploration_epsilon
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.state.failures = FailureLog.from_settings(settings, app.state.metrics.registry, lambda: _live_version(app))
    install_error_handlers(app)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        """Prometheus exposition format."""
        return Response(app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(health.router)
    app.include_router(recommendations.router)
    app.include_router(items.router)
    app.include_router(events.router)
    add_offline_docs(app)
    _serve_lean(app, HOT_PATHS)
    return app


API_DESCRIPTION = (
    "Recommendations precomputed by recforge's pipeline and published as versions: every answer names "
    "the `version` that produced it. Errors are JSON objects with a `detail` saying what was wrong."
)

# Endpoints that take the raw Request and parse their own parameters (serving.dependencies),
# matched first and in this order: recommendations (the hottest), then the no-op (which pays one
# failed match, as any request to another endpoint does), then similar items (whose index search
# dwarfs a failed match), then the collector (a POST: every GET above fails its match in one comparison).
HOT_PATHS = ("/v1/users/{user_id}/recommendations", "/v1/noop", "/v1/items/{item_id}/similar", "/v1/events")


def _serve_lean(app: FastAPI, paths: tuple[str, ...]) -> None:
    """Serve the hot endpoints through Starlette's plain request/response wrapper, matched first.

    Their FastAPI declarations stay (they describe the endpoints in OpenAPI and route them), but
    a request no longer goes through FastAPI's generic dependency solving, which cost more than
    the answer itself. Errors still raise HTTPException (serving.errors.ApiError) and get FastAPI's JSON error body.
    The no-op ceiling goes the same way, so the benchmark compares like with like.
    """
    by_path = {getattr(route, "path", None): route for route in app.router.routes}
    hot = [by_path[path] for path in paths]
    for route in hot:
        route.app = request_response(route.endpoint)
    app.router.routes[:] = hot + [route for route in app.router.routes if route not in hot]


def _live_version(app: FastAPI) -> str | None:
    store = getattr(app.state, "store", None)
    live = store.current if store is not None else None
    return live.version if live is not None else None


async def _start_collector(app: FastAPI, settings: ServingSettings):
    """Start the events backend the settings choose, or none while no app key is set (503 then)."""
    if settings.collector_app_key is None:
        return None
    from serving.collector import open_backend

    collector = open_backend(settings, on_commit=app.state.metrics.committed)
    await collector.start()
    app.state.collector_key = settings.collector_app_key.get_secret_value().encode()
    app.state.collector_settings = settings
    app.state.collector = collector
    return collector


def _limit_faiss_threads(threads: int) -> None:
    """One query at a time per request: OpenMP fan-out only adds wake-up latency and fights the other requests."""
    import faiss

    faiss.omp_set_num_threads(threads)
