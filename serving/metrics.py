"""Prometheus metrics of the API: requests and latency per endpoint, fallbacks, the live version.

One registry per app (not the process-global default), so tests and several apps in one
process never share counters. Requests are measured by a plain ASGI middleware (Starlette's
BaseHTTPMiddleware costs a task and a stream per request, a visible share of a fast endpoint).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from serving.store import PublicationStore

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)

# The names Prometheus sees, imported by what reads them: the alert rules and the health check
# (pipelines/operations/). A histogram's samples are LATENCY + "_bucket" / "_sum" / "_count".
REQUESTS = "recforge_requests_total"
LATENCY = "recforge_request_latency_seconds"
FALLBACKS = "recforge_fallback_total"
LIVE_PUBLICATION = "recforge_live_publication_info"
PUBLICATION_AGE = "recforge_live_publication_age_seconds"
# The `endpoint` label is the route's path: the API's routes start with API_PREFIX.
API_PREFIX = "/v1/"
RECOMMENDATIONS_ENDPOINT = "/v1/users/{user_id}/recommendations"
COLLECTOR_EVENTS = "recforge_collector_events_total"
# Where a handler leaves the canary's guardrail window (serving.variants.CanaryMonitor) for this request.
CANARY_SCOPE_KEY = "recforge.canary"
COLLECTOR_COMMIT_LATENCY = "recforge_collector_commit_seconds"
COLLECTOR_COMMIT_EVENTS = "recforge_collector_commit_events"


class ServingMetrics:
    def __init__(self, store_getter: Callable[[], PublicationStore | None]):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            REQUESTS, "HTTP requests by endpoint and status", ["endpoint", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            LATENCY, "Request latency by endpoint", ["endpoint"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.fallbacks = Counter(
            FALLBACKS, "Answers served from the fallback list (unknown users)", registry=self.registry
        )
        self.collector_events = Counter(
            COLLECTOR_EVENTS, "Events sent to POST /v1/events by outcome: accepted, or the reason code",
            ["outcome"], registry=self.registry,
        )  # fmt: skip
        self.collector_commit_latency = Histogram(
            COLLECTOR_COMMIT_LATENCY, "Time to make one group of events durable (write + fsync, or XADD)",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.collector_commit_events = Histogram(
            COLLECTOR_COMMIT_EVENTS, "Events per durable commit (one fsync, or one XADD pipeline)",
            buckets=(1, 10, 100, 1000, 10000, 100000), registry=self.registry,
        )  # fmt: skip
        self._accepted = self.collector_events.labels("accepted")
        live = Gauge(LIVE_PUBLICATION, "The live publication", ["version"], registry=self.registry)
        self._store_getter = store_getter
        self._children: dict[tuple[str, int], tuple] = {}

        def publication(attribute: Callable) -> Callable[[], float]:
            def read() -> float:
                store = self._store_getter()
                if store is None or store.current is None:
                    return float("nan")
                return float(attribute(store.current))

            return read

        gauges = {
            PUBLICATION_AGE: (
                "Age of the live publication",
                lambda p: (datetime.now(UTC) - datetime.fromisoformat(p.manifest["created_at"])).total_seconds(),
            ),
            "recforge_publication_users": ("Users with a stored list in the live publication", lambda p: p.n_users),
            "recforge_publication_list_bytes_per_user": (
                "Memory of the per-user lists divided by the number of users",
                lambda p: p.bytes_per_user,
            ),
            "recforge_publication_load_seconds": (
                "Time to load and verify the live publication",
                lambda p: p.load_seconds,
            ),
        }
        for name, (description, attribute) in gauges.items():
            Gauge(name, description, registry=self.registry).set_function(publication(attribute))

        # The version label is refreshed at scrape time from whatever is live then.
        def versions() -> None:
            store = self._store_getter()
            live.clear()
            if store is not None and store.current is not None:
                live.labels(store.current.version).set(1)

        self._refresh_version = versions

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        children = self._children.get((endpoint, status))
        if children is None:  # labels() takes a lock and builds a key: do it once per (endpoint, status)
            children = self._children[(endpoint, status)] = (
                self.requests.labels(endpoint, str(status)),
                self.latency.labels(endpoint),
            )
        children[0].inc()
        children[1].observe(seconds)

    def collected(self, accepted: int, errors: list[dict]) -> None:
        if accepted:
            self._accepted.inc(accepted)
        for error in errors:
            self.collector_events.labels(error["reason"]).inc()

    def collector_unavailable(self, events: int) -> None:
        self.collector_events.labels("unavailable").inc(events)

    def committed(self, events: int, seconds: float) -> None:
        """A group made durable (the backend's on_commit)."""
        self.collector_commit_latency.observe(seconds)
        self.collector_commit_events.observe(events)

    def exposition(self) -> bytes:
        self._refresh_version()
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template (``/v1/users/{user_id}/...``)."""

    def __init__(self, app, metrics: ServingMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            seconds = time.perf_counter() - started
            self.metrics.observe(getattr(route, "path", "unmatched"), status, seconds)
            canary = scope.get(CANARY_SCOPE_KEY)
            if canary is not None:  # an answer of a canary variant: its guardrails' window (serving/variants.py)
                canary.observe(seconds, status >= 500)
