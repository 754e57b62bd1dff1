"""The scaled configuration's Redis Streams, moved into landing files: the collector's events into closed
segments (``drain_redis_stream``), serving's served slates into impression files (``drain_impression_stream``
in ``pipelines/ingest/impression_stream.py``).

Ingest reads landing files only, and so do retention and forgetting: ``drain_scaled_streams`` lets each
of them move whatever still waits in a stream first. This module imports no ingest machinery (and so
nothing of privacy), so the privacy walks can call it. An entry is acknowledged (``XACK``) and deleted
from its stream only once its file is durable; a file is named by its read's first entry id, so a run
that died between writing and acknowledging finds the same entries pending, sees the file exists and
only acknowledges them.
"""

from __future__ import annotations

import logging
import os
from datetime import date
from pathlib import Path

from pipelines.ingest.impression_stream import drain_impression_stream
from pipelines.ingest.redis_drain import drain_stream
from pipelines.settings import Settings
from serving.collector.segments import CLOSED_SUFFIX, day_dir, fsync_dir
from serving.config import ServingSettings, settings_without_app_key

REDIS_CONSUMER = "recforge-stream-ingest"
REDIS_READ_COUNT = 10_000  # entries per read, and so at most per segment
PARTIAL_SUFFIX = ".jsonl.partial"  # a segment from Redis while it is written (rewritten whole by a re-run)

log = logging.getLogger(__name__)


def stream_dir(settings: Settings) -> Path:
    """Where the collector writes its segments (serving.config.ServingSettings.stream_dir, same home)."""
    return settings.landing_dir / "stream"


def drain_redis_stream(settings: Settings, collector: ServingSettings, max_entries: int = 1_000_000) -> int:
    """Move the collector's Redis Stream into closed segments, acknowledging and deleting what is durable.

    Reads as the consumer group's one consumer: first the entries an earlier run read but did not
    acknowledge (it died before), then new ones. Returns how many entries were moved.
    """
    moved = drain_stream(
        collector.collector_redis_url, collector.collector_redis_stream, collector.collector_redis_group,
        REDIS_CONSUMER, REDIS_READ_COUNT, lambda entries: _write_entries(stream_dir(settings), entries), max_entries,
    )  # fmt: skip
    if moved:
        log.info("stream: moved %d event(s) from %r into segments", moved, collector.collector_redis_stream)
    return moved


def _write_entries(root: Path, entries: list) -> None:
    """One closed segment per landing day of `entries`, named by its first entry id (durable before return)."""
    by_day: dict[str, list[tuple[bytes, bytes]]] = {}
    for entry_id, fields in entries:
        if not fields:  # deleted from the stream after being read: already in a segment
            continue
        by_day.setdefault(fields[b"day"].decode(), []).append((entry_id, fields[b"event"]))
    for day, rows in by_day.items():
        directory = day_dir(root, date.fromisoformat(day))
        directory.mkdir(parents=True, exist_ok=True)
        name = "redis-" + rows[0][0].decode().replace("-", "_")
        closed = directory / f"{name}{CLOSED_SUFFIX}"
        if closed.exists():  # written by a run that died before acknowledging: the same entries
            continue
        temporary = directory / f"{name}{PARTIAL_SUFFIX}"  # no segment name: neither ingest nor recovery reads it
        with open(temporary, "wb") as out:
            out.write(b"".join(event + b"\n" for _, event in rows))
            out.flush()
            os.fsync(out.fileno())
        temporary.rename(closed)
        fsync_dir(directory)


def drain_scaled_streams(settings: Settings) -> int:
    """Move whatever waits in the scaled configuration's Redis Streams (the collector's events, serving's
    slates) into landing files now; returns the entries moved.

    Retention and forgetting walk landing files: draining first means an event or a slate still in a
    stream is reached by the same walk instead of escaping it."""
    serving = settings_without_app_key(settings.home)
    moved = drain_redis_stream(settings, serving) if serving.collector_backend == "redis" else 0
    return moved + drain_scaled_impressions(settings, serving)


def drain_scaled_impressions(settings: Settings, serving: ServingSettings | None = None) -> int:
    """Move serving's slates waiting in the scaled configuration's Redis Stream into impression landing
    files (nothing to do on the embedded default, whose serving writes those files itself)."""
    serving = serving or settings_without_app_key(settings.home)
    return drain_impression_stream(settings.home, serving) if serving.impressions_sink == "redis" else 0
