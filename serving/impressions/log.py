"""The impression log: the answer path hands over a tuple, a background thread writes batches.

Why this shape: an answer costs tens of microseconds, so the answer path may do no I/O and no
serialisation. It appends one small tuple (request id, time, user or item, the publication, and
the slate as the user's position in the stored lists or as the item-row and score arrays the
answer was cut from) to a bounded in-memory queue, and returns. When the queue is full the
impression is dropped and counted (``recforge_impressions_dropped_total{reason="buffer_full"}``):
serving never waits for its log. Every ``flush_seconds`` a background thread drains the queue,
builds the batch column by column with numpy and Arrow (item ids and scores are taken from the
publication's arrays by index, so no per-item Python object is made) and hands one table per
interval to the sink: staged Arrow parts sealed into one Parquet landing file per interval
(``FileSink``, the embedded default) or Redis Stream entries (``RedisSink``, scaled).
Stopping the log flushes the queue and seals every interval it holds.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from serving.impressions.format import (
    DICTIONARY_COLUMNS,
    ENDPOINTS,
    OPEN_DIR,
    PART_SUFFIX,
    PROPENSITIES,
    SCHEMA,
    STREAM_FIELD,
    day_dir,
    interval_start_of,
    interval_tag,
    sealed_name,
    to_ipc_stream,
)

log = logging.getLogger(__name__)

RECOMMENDATIONS, SIMILAR_ITEMS = 0, 1  # codes into ENDPOINTS, carried in the tuples
SHADOW_PENDING = -2  # the position of a shadow slate the writer has yet to cut
CHUNK_SLATES = 1024  # slates the writer converts between two hand-overs of the GIL (ImpressionLog._chunked_tables)
WRITTEN = "recforge_impressions_written_total"
DROPPED = "recforge_impressions_dropped_total"
QUEUED = "recforge_impressions_queued"
_ENDPOINTS = pa.array(ENDPOINTS, pa.string())


class FileSink:
    """Parquet parts staged per process and interval under ``.open/``, sealed into one landing file each."""

    def __init__(self, root: Path, process: str):
        self.root = root
        self.process = process
        self.staging = root / OPEN_DIR / process
        self._parts = 0

    def write(self, interval_start: int, table: pa.Table) -> None:
        directory = self.staging / interval_tag(interval_start)
        directory.mkdir(parents=True, exist_ok=True)
        self._parts += 1
        part = directory / f"part-{self._parts:08d}{PART_SUFFIX}"
        temporary = directory / f".{part.name}.tmp"
        # Parts are Arrow IPC: a tenth of Parquet's cost to write; Parquet is written once, when sealing.
        with pa.OSFile(str(temporary), "wb") as sink, pa.ipc.new_file(sink, SCHEMA) as writer:
            writer.write_table(table)
        os.replace(temporary, part)  # a part is whole or absent: sealing never reads a torn one

    def seal(self, interval_start: int) -> Path | None:
        return seal_directory(self.staging / interval_tag(interval_start), self.root, self.process)

    def seal_stale(self, ended_before: float) -> list[Path]:
        """Seal parts that any process left behind (a crash) for intervals that ended before the time given."""
        sealed = []
        for process_dir in sorted((self.root / OPEN_DIR).glob("*")):
            for directory in sorted(process_dir.glob("*")):
                tag = directory.name.split(".", 1)[0]
                try:
                    start = interval_start_of(tag)
                except ValueError:
                    log.warning("impressions: %s is not an interval's staging directory; left alone", directory)
                    continue
                if start < ended_before and (path := seal_directory(directory, self.root, process_dir.name)):
                    sealed.append(path)
        return sealed

    def close(self) -> None:
        pass


def seal_directory(directory: Path, root: Path, process: str) -> Path | None:
    """The parts of one staged interval as one Parquet file in its landing day; the parts are removed.

    The directory is first renamed to a claim (``<tag>.sealing-<pid>``), so two processes sealing
    leftovers at once never both read it. The file is written under a hidden name, fsynced and
    renamed into place: ingest sees a whole file or none.
    """
    tag = directory.name.split(".", 1)[0]
    claimed = directory.with_name(f"{tag}.sealing-{os.getpid()}")
    try:
        os.rename(directory, claimed)
    except FileNotFoundError:
        return None
    parts = sorted(claimed.glob(f"part-*{PART_SUFFIX}"))
    if not parts:
        shutil.rmtree(claimed, ignore_errors=True)
        return None
    start = interval_start_of(tag)
    target_dir = day_dir(root, start)
    target_dir.mkdir(parents=True, exist_ok=True)
    sequence = 0
    while (target := target_dir / sealed_name(start, process, sequence)).exists():
        sequence += 1  # records that reached an interval after it was sealed: a second file
    write_sealed_file(target, (pa.ipc.open_file(pa.memory_map(str(part))).read_all() for part in parts))
    shutil.rmtree(claimed, ignore_errors=True)
    return target


def write_sealed_file(target: Path, tables: Iterable[pa.Table]) -> None:
    """`tables` as one Parquet landing file at `target`: written under a hidden name, fsynced and renamed,
    so ingest sees a whole file or none (also the scaled configuration's, pipelines/ingest/impression_stream.py)."""
    temporary = target.with_name(f".{target.name}.tmp")
    # Statistics only where a reader may prune by them: on the string and list columns they cost half the write.
    with pq.ParquetWriter(
        temporary, SCHEMA, use_dictionary=DICTIONARY_COLUMNS, write_statistics=["served_at"]
    ) as writer:
        for table in tables:
            writer.write_table(table)
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, target)


class RedisSink:
    """One Redis Stream entry per flushed batch and interval: the batch as an Arrow IPC stream (the same schema)."""

    def __init__(self, url: str, stream: str, process: str):
        import redis  # the scaled extra; only this sink needs it

        self.client = redis.Redis.from_url(url, socket_timeout=10)
        self.stream = stream
        self.process = process

    def write(self, interval_start: int, table: pa.Table) -> None:
        fields = {
            "interval": interval_tag(interval_start),
            "process": self.process,
            "rows": str(table.num_rows),
            STREAM_FIELD: to_ipc_stream(table),
        }
        self.client.xadd(self.stream, fields)

    def seal(self, interval_start: int) -> None:
        return None  # an entry is whole when XADD returns

    def seal_stale(self, ended_before: float) -> list:
        return []

    def close(self) -> None:
        self.client.close()


class ImpressionLog:
    """A bounded queue of slates and the thread that writes them (see the module docstring)."""

    def __init__(
        self,
        sink,
        *,
        capacity: int,
        flush_seconds: float,
        interval_seconds: int,
        registry=None,
        clock=time.time,
    ):
        from prometheus_client import Counter, Gauge

        self.sink = sink
        self.capacity = capacity
        self.flush_seconds = flush_seconds
        self.interval_seconds = interval_seconds
        self.clock = clock
        self._queue: deque = deque()
        self._open: set[int] = set()  # intervals with staged parts not sealed yet
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one flush at a time (the thread's and an explicit flush())
        self.written = Counter(WRITTEN, "Slates written by the impression log", registry=registry)
        self.dropped = Counter(
            DROPPED, "Slates not logged: the queue was full or the sink failed", ["reason"], registry=registry
        )
        self._full = self.dropped.labels("buffer_full")
        self._failed = self.dropped.labels("sink_error")
        Gauge(QUEUED, "Slates waiting for the impression log's writer", registry=registry).set_function(
            lambda: len(self._queue)
        )

    # --- the answer path: one tuple, never a wait
    # A tuple: (request id, time, endpoint, user or item, publication, position in the stored lists or -1
    # (or SHADOW_PENDING), count, rows, scores, fallback, experiment, variant, propensities, shadow);
    # propensities are one float for every shown item, an array, or None.

    def stored_slate(
        self, request_id: bytes, user_id: str, publication, position: int, count: int,
        experiment: str | None = None, variant: str | None = None, propensity: float = 1.0,
    ) -> None:  # fmt: skip
        """A known user's answer: the first `count` items of their stored list (the C path's answer)."""
        queue = self._queue
        if len(queue) < self.capacity:
            queue.append((request_id, self.clock(), RECOMMENDATIONS, user_id, publication, position, count, None,
                          None, False, experiment, variant, propensity, False))  # fmt: skip
        else:
            self._full.inc()

    def slate(
        self, request_id: bytes, endpoint: int, subject: str, publication, rows, scores, fallback: bool,
        experiment: str | None = None, variant: str | None = None, propensities=1.0,
    ) -> None:  # fmt: skip
        """Any other answer: the item rows and scores it showed (arrays the answer was built from)."""
        queue = self._queue
        if len(queue) < self.capacity:
            queue.append((request_id, self.clock(), endpoint, subject, publication, -1, len(rows), rows, scores,
                          fallback, experiment, variant, propensities, False))  # fmt: skip
        else:
            self._full.inc()

    def shadow(
        self, request_id: bytes, user_id: str, publication, k: int, blocked: frozenset[str], excluded: list[str],
        experiment: str, variant: str,
    ) -> None:  # fmt: skip
        """A shadow variant's slate for this request: only what it needs is queued; the writer looks the user
        up in the shadow's publication and cuts the slate (same k, blocklist and exclusions), off the answer path."""
        queue = self._queue
        if len(queue) < self.capacity:
            queue.append((request_id, self.clock(), RECOMMENDATIONS, user_id, publication, SHADOW_PENDING, 0,
                          (k, blocked, excluded), None, False, experiment, variant, None, True))  # fmt: skip
        else:
            self._full.inc()

    # --- the writer

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="impression-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Flush what is queued and seal every interval (the server's shutdown)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
        else:
            self.flush(final=True)
        self.sink.close()

    def _run(self) -> None:
        try:
            # Parts a crashed process left for intervals that are over (a live one seals its own in time).
            self.sink.seal_stale(self.clock() - self.interval_seconds - 10 * self.flush_seconds - 60)
        except Exception:
            log.exception("impressions: sealing parts left behind")
        while not self._stop.wait(self.flush_seconds):
            self.flush()
        self.flush(final=True)

    def flush(self, final: bool = False) -> int:
        """Write what is queued now and seal the intervals that are over (all when final); the slates written."""
        with self._lock:
            queue = self._queue
            records = [queue.popleft() for _ in range(len(queue))]
            written = 0
            if records:
                try:
                    for interval_start, table, slates in self._chunked_tables(records):
                        self.sink.write(interval_start, table)
                        self._open.add(interval_start)
                        written += slates
                except Exception:
                    log.exception("impressions: writing %d slate(s) failed; they are dropped", len(records) - written)
                    self._failed.inc(len(records) - written)
                self.written.inc(written)
            # Records reach the queue a moment after their timestamp: an interval is sealed a little after its end.
            now = self.clock()
            for interval_start in sorted(self._open):
                if final or now >= interval_start + self.interval_seconds + 2 * self.flush_seconds:
                    try:
                        self.sink.seal(interval_start)
                    except Exception:
                        tag = interval_tag(interval_start)
                        log.exception("impressions: sealing %s failed; a later start retries", tag)
                    self._open.discard(interval_start)
            return written

    def _chunked_tables(self, records: list[tuple]):
        """`_tables` of the batch built CHUNK_SLATES at a time, one table per interval (the chunks concatenated).

        Building a second's slates at once held the GIL for tens of milliseconds at a time (numpy and
        Arrow conversions of 10,000+ Python objects each), and every answer waiting behind it showed
        the pause: under saturation the recommendations' p99 was 15-60 ms against 2 ms with the log
        off. Between chunks the writer sleeps(0), which hands the GIL to the answer path.
        """
        parts: dict[int, list[tuple[pa.Table, int]]] = {}
        for start in range(0, len(records), CHUNK_SLATES):
            for interval_start, table, slates in self._tables(records[start : start + CHUNK_SLATES]):
                parts.setdefault(interval_start, []).append((table, slates))
            time.sleep(0)
        for interval_start, tables in parts.items():
            table = tables[0][0] if len(tables) == 1 else pa.concat_tables([table for table, _ in tables])
            yield interval_start, table, sum(slates for _, slates in tables)

    def _tables(self, records: list[tuple]):
        """(interval start, table in the contract's schema, slates) per interval and publication of a batch."""
        if any(record[5] == SHADOW_PENDING for record in records):
            records = [_cut_shadow(record) if record[5] == SHADOW_PENDING else record for record in records]
        fields = list(zip(*records, strict=True))  # one tuple per field: the only pass over the records
        served = np.array(fields[1], dtype=np.float64)
        intervals = (served // self.interval_seconds).astype(np.int64) * self.interval_seconds
        publications = fields[4]
        first = publications[0]
        if publications.count(first) == len(publications) and intervals[0] == intervals[-1]:  # the usual batch
            yield int(intervals[0]), _slate_table(fields, first, served), len(records)
            return
        codes = np.array([id(p) for p in publications], dtype=np.int64)
        keys = np.stack([intervals, codes], axis=1)
        for interval_start, code in np.unique(keys, axis=0).tolist():
            indices = np.flatnonzero((intervals == interval_start) & (codes == code))
            chosen = [tuple(field[i] for i in indices.tolist()) for field in fields]
            yield interval_start, _slate_table(chosen, publications[indices[0]], served[indices]), len(indices)


def _cut_shadow(record: tuple) -> tuple:
    """A queued shadow slate cut from its publication as the answer would have been (never shown)."""
    request_id, served, endpoint, user_id, publication, _, _, (k, blocked, excluded), _, _, *rest = record
    k = min(k, publication.top_n)
    position = publication.user_position(user_id)
    rows, scores, _ = publication.user_slate(
        position, k, publication.blocked_mask(blocked), publication.excluded_rows(excluded)
    )
    return (request_id, served, endpoint, user_id, publication, -1, len(rows), rows, scores, position is None, *rest)


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The concatenation of range(start, start + count) for each pair, without a Python loop."""
    before = np.cumsum(counts) - counts
    return np.repeat(starts - before, counts) + np.arange(int(counts.sum()))


def _slate_table(fields: list[tuple], publication, served: np.ndarray) -> pa.Table:
    """One row per answer for answers of one publication; the item lists gathered by index from its arrays."""
    request_ids, _, endpoints, subjects, _, positions, counts, explicit_rows, explicit_scores, fallbacks = fields[:10]
    experiments, variants, propensities, shadows = fields[10:]
    n = len(request_ids)
    counts = np.array(counts, dtype=np.int64)
    positions = np.array(positions, dtype=np.int64)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    total = int(offsets[-1])
    rows = np.empty(total, dtype=np.int64)
    scores = np.empty(total, dtype=np.float32)
    stored = positions >= 0
    if stored.all():  # every slate cut from the stored lists (the C path): one gather
        source = _ranges(publication.offsets[positions], counts)
        rows[:] = publication.rec_items[source]
        scores[:] = publication.rec_scores[source]
    else:
        if stored.any():
            source = _ranges(publication.offsets[positions[stored]], counts[stored])
            target = _ranges(offsets[:-1][stored].astype(np.int64), counts[stored])
            rows[target] = publication.rec_items[source]
            scores[target] = publication.rec_scores[source]
        for index in np.flatnonzero(~stored).tolist():  # the Python path's answers carry their arrays
            rows[offsets[index] : offsets[index + 1]] = explicit_rows[index]
            scores[offsets[index] : offsets[index + 1]] = explicit_scores[index]
    endpoint = np.array(endpoints, dtype=np.int64)
    subject = pa.array(subjects, pa.string())
    is_user = pa.array(endpoint == RECOMMENDATIONS)
    null = pa.nulls(n, pa.string())
    list_offsets = pa.array(offsets)
    columns = {
        "request_id": pa.array(request_ids, pa.binary()).cast(pa.string()),
        "served_at": pa.array((served * 1e6).astype(np.int64), pa.timestamp("us", tz="UTC")),
        "endpoint": _ENDPOINTS.take(pa.array(endpoint)),
        "user_id": pc.if_else(is_user, subject, null),
        "anchor_item_id": pc.if_else(is_user, null, subject),
        "fallback": pa.array(fallbacks, pa.bool_()),
        "version": pa.repeat(pa.scalar(publication.version, pa.string()), n),
        "experiment": pa.array(experiments, pa.string()),
        "variant": pa.array(variants, pa.string()),
        "shadow": pa.array(shadows, pa.bool_()),
        "item_ids": pa.ListArray.from_arrays(list_offsets, publication.item_id_array.take(pa.array(rows))),
        "scores": pa.ListArray.from_arrays(list_offsets, pa.array(scores)),
        PROPENSITIES: _propensities(propensities, counts, offsets),
    }
    return pa.table(columns, schema=SCHEMA)


def _propensities(given: tuple, counts: np.ndarray, offsets: np.ndarray) -> pa.ListArray:
    """The propensity lists: one float per slate repeated over its items (the usual case, one numpy call),
    an explicit array per explored slate, null for shadow slates."""
    if all(type(p) is float for p in given):
        values = np.repeat(np.array(given, dtype=np.float64), counts)
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))
    values = np.empty(int(offsets[-1]), dtype=np.float64)
    valid = np.ones(len(given), dtype=bool)
    for index, p in enumerate(given):
        if p is None:
            valid[index] = False
        else:
            values[offsets[index] : offsets[index + 1]] = p
    mask = pa.array(~valid)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values), mask=mask)
