"""Prometheus metrics of the API: requests and latency per endpoint, fallbacks, the live version.

One registry per app (not the process-global default), so tests and several apps in one
process never share counters.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.requests import Request

from serving.publication import PublicationStore

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


class ServingMetrics:
    def __init__(self, store_getter):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "recforge_requests_total", "HTTP requests by endpoint and status", ["endpoint", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "recforge_request_latency_seconds", "Request latency by endpoint", ["endpoint"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.fallbacks = Counter(
            "recforge_fallback_total", "Answers served from the fallback list (unknown users)", registry=self.registry
        )
        live = Gauge("recforge_live_publication_info", "The live publication", ["version"], registry=self.registry)
        age = Gauge("recforge_live_publication_age_seconds", "Age of the live publication", registry=self.registry)
        self._store_getter = store_getter

        # Both gauges are computed at scrape time from whatever is live then.
        def versions():
            store: PublicationStore | None = self._store_getter()
            live.clear()
            if store is not None and store.current is not None:
                live.labels(store.current.version).set(1)

        def publication_age() -> float:
            store: PublicationStore | None = self._store_getter()
            if store is None or store.current is None:
                return float("nan")
            created = datetime.fromisoformat(store.current.manifest["created_at"])
            return (datetime.now(UTC) - created).total_seconds()

        age.set_function(publication_age)
        self._refresh_version = versions

    def observe(self, request: Request, status: int, started: float) -> None:
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "unmatched")
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(time.perf_counter() - started)

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        self._refresh_version()
        return generate_latest(self.registry)
