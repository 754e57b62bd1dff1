"""The scaled configuration's impression log: serving's Redis Stream -> sealed impression landing files.

With ``RECFORGE_IMPRESSIONS_SINK=redis`` each server appends one stream entry per flushed batch and
interval (``serving/impressions/log.py``, ``RedisSink``: the batch as an Arrow IPC stream in the
impression schema). Daily ingest reads landing files only (``pipelines/ingest/impressions.py``), and
so do retention and forgetting; `drain_impression_stream` therefore moves the stream's entries into
the landing layout the embedded default's ``FileSink`` writes before a day's impressions are ingested,
so both configurations share one ingest path and one set of stores to purge. Why it is shaped like this:
- One Parquet file per interval and read, named ``impressions-<interval>-redis_<first entry id>``
  (``sealed_name``): written under a hidden name, fsynced and renamed, so ingest sees a whole file or
  none; an entry is acknowledged (``XACK``) and deleted from the stream only once its file is durable.
- A run reads this consumer's pending entries first (a run that died between writing and
  acknowledging): the same entries in the same order give the same file names, so it finds the files
  there and only acknowledges them: no slate is stored twice.
- An entry that is not an impression batch (no Arrow field, another schema) stops the run naming the
  entry, before anything of that read is acknowledged: nothing is lost, and nothing half-read is kept.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa

from pipelines.ingest.errors import IngestError
from pipelines.ingest.redis_drain import drain_stream
from serving.collector.segments import fsync_dir
from serving.config import ServingSettings
from serving.impressions.format import (
    STREAM_FIELD,
    day_dir,
    from_ipc_stream,
    interval_start_of,
    landing_dir,
    sealed_name,
)
from serving.impressions.log import write_sealed_file

IMPRESSIONS_GROUP = "recforge-impressions-ingest"
IMPRESSIONS_CONSUMER = "recforge-ingest"
READ_COUNT = 1_000  # entries per read; an entry is one server's flush (up to thousands of slates)

log = logging.getLogger(__name__)


def drain_impression_stream(home: Path, serving: ServingSettings, max_entries: int = 1_000_000) -> int:
    """Move serving's impression stream into sealed landing files, acknowledging and deleting what is durable.

    Returns how many entries were moved. Reads as the consumer group's one consumer: first the
    entries an earlier run read but did not acknowledge, then new ones.
    """
    stream = serving.impressions_redis_stream
    moved = drain_stream(
        serving.impressions_redis_url, stream, IMPRESSIONS_GROUP, IMPRESSIONS_CONSUMER, READ_COUNT,
        lambda entries: write_landing_files(landing_dir(home), stream, entries), max_entries,
    )  # fmt: skip
    if moved:
        log.info("impressions: moved %d batch(es) from Redis Stream %r into landing files", moved, stream)
    return moved


def write_landing_files(root: Path, stream: str, entries: list) -> list[Path]:
    """One sealed landing file per interval of `entries`, named by its first entry id; durable before return."""
    by_interval: dict[str, list[tuple[str, pa.Table]]] = {}
    for entry_id, fields in entries:
        if not fields:  # deleted from the stream after being read: already in a file
            continue
        name = entry_id.decode()
        where = f"Redis Stream {stream!r} entry {name}"
        if STREAM_FIELD.encode() not in fields or b"interval" not in fields:
            raise IngestError(f"{where}: not an impression batch (fields {sorted(k.decode() for k in fields)})")
        try:
            table = from_ipc_stream(fields[STREAM_FIELD.encode()])
            tag = fields[b"interval"].decode()
            interval_start_of(tag)
        except (ValueError, pa.ArrowException) as error:
            raise IngestError(f"{where}: not an impression batch: {error}") from None
        by_interval.setdefault(tag, []).append((name, table))
    written = []
    for tag, batches in by_interval.items():
        start = interval_start_of(tag)
        directory = day_dir(root, start)
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / sealed_name(start, "redis_" + batches[0][0].replace("-", "_"))
        if target.exists():  # written by a run that died before acknowledging: the same entries
            continue
        write_sealed_file(target, (table for _, table in batches))
        fsync_dir(directory)
        written.append(target)
    return written
