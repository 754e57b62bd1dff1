"""Micro-batches: the collector's closed segments -> raw.events (+ quarantine), by the daily rules.

Each closed segment (``landing/stream/date=D/<name>.jsonl``, layout in serving/collector/segments.py)
is one batch, read by the recforge JSONL adapter and classified by the same
``classify_events.sql`` as a daily landing file, in the time window of its landing day ``D`` (the day
the collector received it): accepted rows to ``raw.events``, every other row to ``quarantine.events``
with its reason, counts in ``raw.batches``. Why it is shaped like this:
- The batch id is ``stream:D:<segment name>``, stable for the segment, so ingesting a segment again
  replaces exactly its own rows (``replace=True`` re-ingests every closed segment; a plain run takes
  only segments no batch records yet). A segment is never written again once closed, so a recorded
  batch is complete.
- Source ``stream``: a landing day's daily files (source ``recforge``) are replaced whole by the daily
  ingest, which therefore never deletes a micro-batch, and the reverse.
- One transaction per run: a run ingests all its segments or none.
- Open segments are never read; segments are kept after ingestion (like landing files).
- The scaled configuration (``RECFORGE_COLLECTOR_BACKEND=redis``): a run first moves the Redis
  Stream's events into closed segments (``drain_redis_stream``) and then ingests segments as above, so
  both configurations share one ingest path and one record of what was ingested. An entry is
  acknowledged (``XACK``) and deleted from the stream only once its segment is durable; the segment of
  a read is named by its first entry id, so a run that died between writing and acknowledging finds
  the same entries pending, sees the segment exists and only acknowledges them.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from pipelines.ingest.batch import BatchWindow, ingest_batch
from pipelines.ingest.run import EPOCH, IngestResult, _guarded
from pipelines.ingest.sources import STREAM, STREAM_SOURCE
from pipelines.settings import Settings
from pipelines.warehouse.connection import connect
from serving.collector.segments import CLOSED_SUFFIX, closed_segments, day_dir, fsync_dir
from serving.config import ServingSettings, settings_without_app_key

REDIS_CONSUMER = "recforge-stream-ingest"
REDIS_READ_COUNT = 10_000  # entries per read, and so at most per segment
PARTIAL_SUFFIX = ".jsonl.partial"  # a segment from Redis while it is written (rewritten whole by a re-run)

log = logging.getLogger(__name__)


def stream_dir(settings: Settings) -> Path:
    """Where the collector writes its segments (serving.config.ServingSettings.stream_dir, same home)."""
    return settings.landing_dir / "stream"


def segment_day(segment: Path) -> date:
    return date.fromisoformat(segment.parent.name.removeprefix("date="))


def stream_batch_id(segment: Path) -> str:
    return f"{STREAM_SOURCE}:{segment_day(segment).isoformat()}:{segment.name}"


def day_window(settings: Settings, day: date) -> BatchWindow:
    """The time window of a landing day: the same for its daily files and its micro-batches."""
    midnight = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    return BatchWindow(
        interval_start=midnight,
        interval_end=midnight + timedelta(days=1),
        landing_date=day,
        latest_allowed=midnight + timedelta(days=1, seconds=settings.future_tolerance_seconds),
        earliest_allowed=midnight - timedelta(days=settings.late_arrival_days),
    )


def ingest_stream(settings: Settings, replace: bool = False, limit: int | None = None) -> IngestResult:
    """Ingest the closed segments no batch records yet (every closed one with `replace`), oldest first.

    `limit` caps the segments of one run (the rest wait for the next). With no segment to ingest the
    warehouse is not opened at all, so a frequent schedule costs nothing while no events arrive.
    """
    collector = settings_without_app_key(settings.home)
    if collector.collector_backend == "redis":
        drain_redis_stream(settings, collector)
    segments = closed_segments(stream_dir(settings))
    results = []
    if segments:
        with connect(settings) as con, con.transaction():
            done = set() if replace else _recorded_batches(con)
            todo = [s for s in segments if stream_batch_id(s) not in done][:limit]
            for segment in todo:
                display = str(segment.relative_to(settings.landing_dir))
                window = day_window(settings, segment_day(segment))
                results.append(_guarded(ingest_batch, con, STREAM, segment, display, stream_batch_id(segment), window,
                                        settings))  # fmt: skip
    first = min((datetime.combine(segment_day(s), datetime.min.time(), tzinfo=UTC) for s in segments), default=EPOCH)
    result = IngestResult(first, datetime.now(UTC), results, catalog_items=0)
    log.info(stream_summary(result, len(segments)))
    return result


def stream_summary(result: IngestResult, closed: int) -> str:
    """One line: what a run ingested, out of how many closed segments."""
    reasons: dict[str, int] = {}
    for batch in result.batches:
        for reason, count in batch.quarantined_by_reason.items():
            reasons[reason] = reasons.get(reason, 0) + count
    return (
        f"ingested {len(result.batches)} of {closed} closed segment(s): {result.rows_input} rows in, "
        f"{result.rows_accepted} accepted, {result.rows_quarantined} quarantined {dict(sorted(reasons.items()))}"
    )


def _recorded_batches(con) -> set[str]:
    rows = con.execute("select batch_id from raw.batches where source = ?", [STREAM_SOURCE]).fetchall()
    return {row[0] for row in rows}


def drain_redis_stream(settings: Settings, collector: ServingSettings, max_entries: int = 1_000_000) -> int:
    """Move the collector's Redis Stream into closed segments, acknowledging and deleting what is durable.

    Reads as the consumer group's one consumer: first the entries an earlier run read but did not
    acknowledge (it died before), then new ones. Returns how many entries were moved.
    """
    import redis

    client = redis.Redis.from_url(collector.collector_redis_url)
    stream, group = collector.collector_redis_stream, collector.collector_redis_group
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise
    moved = 0
    for start in ("0", ">"):  # "0": this consumer's pending entries; ">": entries never delivered
        while moved < max_entries:
            reply = client.xreadgroup(group, REDIS_CONSUMER, {stream: start}, count=REDIS_READ_COUNT)
            entries = reply[0][1] if reply else []
            if not entries:
                break
            _write_entries(stream_dir(settings), entries)
            ids = [entry_id for entry_id, _ in entries]
            client.xack(stream, group, *ids)
            client.xdel(stream, *ids)
            moved += len(entries)
    if moved:
        log.info("stream: moved %d event(s) from Redis Stream %r into segments", moved, stream)
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
    from pipelines.ingest.impression_stream import drain_impression_stream

    serving = settings_without_app_key(settings.home)
    moved = 0
    if serving.collector_backend == "redis":
        moved += drain_redis_stream(settings, serving)
    if serving.impressions_sink == "redis":
        moved += drain_impression_stream(settings.home, serving)
    return moved
