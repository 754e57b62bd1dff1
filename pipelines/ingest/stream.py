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
  Stream's events into closed segments (``drain_redis_stream``, ``pipelines/ingest/stream_drain.py``)
  and then ingests segments as above, so both configurations share one ingest path and one record of
  what was ingested.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from pipelines.ingest.batch import BatchWindow, ingest_batch
from pipelines.ingest.read_ahead import ReadAhead
from pipelines.ingest.run import EPOCH, IngestResult, _guarded
from pipelines.ingest.sources import STREAM, STREAM_SOURCE
from pipelines.ingest.stream_drain import drain_redis_stream, stream_dir
from pipelines.settings import Settings
from pipelines.warehouse.connection import connect
from serving.collector.segments import closed_segments
from serving.config import settings_without_app_key

log = logging.getLogger(__name__)


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
            with ReadAhead(STREAM, todo, settings.ingest_max_line_bytes) as read_ahead:
                for segment in todo:
                    display = str(segment.relative_to(settings.landing_dir))
                    window = day_window(settings, segment_day(segment))
                    results.append(_guarded(ingest_batch, con, STREAM, segment, display, stream_batch_id(segment),
                                            window, settings, read_ahead))  # fmt: skip
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
