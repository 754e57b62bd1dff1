"""The collector: ``POST /v1/events`` stores events durably before it acknowledges them.

``intake`` reads a body into events and checks each against the event contract
(``serving/events.py``); a backend makes the accepted ones durable: segment files under
``RECFORGE_HOME/landing/stream/`` (``segments``, the embedded default) or a Redis Stream with a
consumer group (``redis_stream``, the scaled configuration), chosen by
``RECFORGE_COLLECTOR_BACKEND``. The route is ``serving/routers/events.py``.
"""

from __future__ import annotations

from collections.abc import Callable

from serving.collector.redis_stream import RedisStreamWriter
from serving.collector.segments import CollectorUnavailable, SegmentWriter
from serving.config import ServingSettings

__all__ = ["CollectorUnavailable", "RedisStreamWriter", "SegmentWriter", "open_backend"]


def open_backend(
    settings: ServingSettings, on_commit: Callable[[int, float], None] | None = None
) -> SegmentWriter | RedisStreamWriter:
    """The backend the settings choose (not started)."""
    if settings.collector_backend == "redis":
        return RedisStreamWriter(
            settings.collector_redis_url, settings.collector_redis_stream, settings.collector_redis_group, on_commit
        )
    return SegmentWriter(
        settings.stream_dir,
        fsync=settings.collector_fsync,
        max_bytes=settings.collector_segment_max_bytes,
        max_seconds=settings.collector_segment_max_seconds,
        commit_delay_seconds=settings.collector_commit_delay_ms / 1000,
        on_commit=on_commit,
    )
