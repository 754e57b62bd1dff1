"""The failure log: one JSON line per failed API answer (4xx/5xx) and per fallback answer, with its reason.

This module is the contract: the reasons (``Reason``), the record's fields (``FIELDS``), the
file names and where they live. Serving writes it (``FailureLog``); the pipeline reads it
(pipelines/operations/failures.py, the weekly health report) by importing these names.

Why a queue and a thread: a failed answer must cost what it costs today. ``FailureLog.record``
only builds a tuple and appends it to a bounded in-memory queue without waiting or locking; a
background thread takes what is pending every ``DRAIN_SECONDS``, turns it into JSON lines and
appends them to ``failures.jsonl``. When the queue is full (the disk
is slow, or a client floods the API with bad requests) the record is dropped and counted
(``recforge_failure_log_dropped_total``) instead of making the answer wait. Every record is also
counted by reason (``recforge_failed_answers_total``), dropped or not, so Prometheus sees the true
rates even when the log cannot keep up.

The files are bounded: ``failures.jsonl`` is rotated to ``failures.jsonl.1`` (and ``.1`` to
``.2``, ...) before it would exceed ``failure_log_file_bytes``; at most ``failure_log_files`` files
are kept, so the log never holds more than files x bytes. One serving process writes one
directory: instances sharing a RECFORGE_HOME each need their own ``RECFORGE_FAILURE_LOG_DIR``.

Ids: with ``failure_log_ids`` off, a record holds no user or item id, no request path and no
error message (the messages quote the ids): only time, endpoint, status, reason and version.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger(__name__)


class Reason(StrEnum):
    """Why an answer is in the failure log: the one enumeration both sides use."""

    UNKNOWN_USER = "unknown_user"  # 200: the user is not in the publication, answered from the fallback list
    FORGOTTEN_USER = "forgotten_user"  # 200: a user forgotten since the publication (deny list): fallback, no id
    UNKNOWN_ITEM = "unknown_item"  # 404: the item is not in the publication
    INVALID_K = "invalid_k"  # 422: k is not an integer within 1..top_n
    INVALID_USER_ID = "invalid_user_id"  # 422: the user id breaks the id contract (serving/ids.py)
    INVALID_ITEM_ID = "invalid_item_id"  # 422: the item id breaks the id contract
    INVALID_PARAMETER = "invalid_parameter"  # 422: another parameter (too many exclude ids, a malformed one)
    NO_PUBLICATION = "no_publication"  # 503: no publication is loaded yet
    UNKNOWN_ENDPOINT = "unknown_endpoint"  # 404: no API route has this path
    METHOD_NOT_ALLOWED = "method_not_allowed"  # 405
    HEADER_TOO_LARGE = "header_too_large"  # 431: the request head is longer than max_header_bytes
    TOO_MANY_HEADERS = "too_many_headers"  # 431: more headers than max_header_count
    BODY_TOO_LARGE = "body_too_large"  # 413: the body is longer than max_body_bytes
    MALFORMED_REQUEST = "malformed_request"  # 400: the HTTP parser could not read the request
    COLLECTOR_OFF = "collector_off"  # 503: POST /v1/events while no app key is set
    UNAUTHORIZED = "unauthorized"  # 401: POST /v1/events without the app key
    INVALID_EVENTS = "invalid_events"  # 400/413/415: a body the collector cannot read; 422: every event rejected
    COLLECTOR_UNAVAILABLE = "collector_unavailable"  # 503: the events could not be stored (disk, Redis)
    INTERNAL_ERROR = "internal_error"  # 500: an unexpected exception in serving
    OTHER = "other"  # any other 4xx/5xx answer of the API


# The fields of a record, in the order they are written. `user_id`, `item_id`, `path` and
# `detail` are left out when ids are off (ID_FIELDS); `path` only appears when no route matched.
FIELDS = ("time", "endpoint", "status", "reason", "version", "user_id", "item_id", "path", "detail")
ID_FIELDS = ("user_id", "item_id", "path", "detail")
UNMATCHED = "unmatched"  # the endpoint of a request no route matched, or refused before routing
FILE_NAME = "failures.jsonl"  # the file being written; rotated ones add .1 (newest) ... .N-1 (oldest)
DIRECTORY = Path("serving") / "failures"  # under RECFORGE_HOME, unless failure_log_dir says otherwise
DRAIN_SECONDS = 0.2  # how often the writer takes what is pending
MAX_FIELD_CHARS = 300  # an id or message longer than this is cut, so one record stays far below a file

# Prometheus names (imported by whatever selects on them).
FAILED_ANSWERS = "recforge_failed_answers_total"
DROPPED = "recforge_failure_log_dropped_total"


def log_files(directory: Path) -> list[Path]:
    """The log's files that exist, oldest first (``failures.jsonl.N-1`` ... ``.1``, then ``failures.jsonl``)."""
    rotated = sorted(
        (p for p in directory.glob(FILE_NAME + ".*") if p.suffix[1:].isdigit()),
        key=lambda p: int(p.suffix[1:]),
        reverse=True,
    )
    current = directory / FILE_NAME
    return rotated + ([current] if current.exists() else [])


def _cut(value: str | None) -> str | None:
    return value if value is None or len(value) <= MAX_FIELD_CHARS else value[:MAX_FIELD_CHARS] + "..."


def record_line(when: float, endpoint: str, status: int, reason: str, version: str | None, *ids) -> bytes:
    """One record as its JSON line: `when` in seconds since the epoch, then FIELDS in order (ids may be absent)."""
    stamp = datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    record = {"time": stamp, "endpoint": endpoint, "status": status, "reason": reason, "version": version}
    for name, value in zip(FIELDS[5:], ids, strict=False):
        if value is not None:
            record[name] = _cut(value)
    return orjson.dumps(record) + b"\n"


class FailureLog:
    """A bounded in-memory queue of failure records, drained into rotating JSON-lines files by one thread."""

    def __init__(
        self,
        directory: Path,
        *,
        max_files: int,
        max_file_bytes: int,
        queue_size: int,
        write_ids: bool,
        registry: CollectorRegistry,
        live_version: Callable[[], str | None] = lambda: None,
    ):
        self.directory = directory
        self.live_version = live_version
        self.max_files = max_files
        self.max_file_bytes = max_file_bytes
        self.write_ids = write_ids
        self.queue_size = queue_size
        self._pending: deque[tuple] = deque()
        self._stopping = threading.Event()
        failed = Counter(
            FAILED_ANSWERS,
            "API answers that failed (4xx/5xx) or fell back, by reason (serving.failures.Reason)",
            ["reason"],
            registry=registry,
        )
        # Every reason's series exists from the start (at 0), and recording skips labels()' lock.
        self._failed = {reason: failed.labels(reason.value) for reason in Reason}
        dropped = Counter(DROPPED, "Failure records not written, by cause", ["cause"], registry=registry)
        self._dropped_full = dropped.labels("queue_full")
        self._dropped_write = dropped.labels("write_error")
        self._thread: threading.Thread | None = None
        self._file = None
        self._size = 0
        self._write_error_logged = False

    @classmethod
    def from_settings(cls, settings, registry: CollectorRegistry, live_version=lambda: None) -> FailureLog:
        return cls(
            settings.failure_log_path,
            max_files=settings.failure_log_files,
            max_file_bytes=settings.failure_log_file_bytes,
            queue_size=settings.failure_log_queue,
            write_ids=settings.failure_log_ids,
            registry=registry,
            live_version=live_version,
        )

    # --- the request side: never waits
    def record(
        self,
        endpoint: str,
        status: int,
        reason: Reason,
        version: str | None,
        user_id: str | None = None,
        item_id: str | None = None,
        path: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Count the failure and queue its record; drop (and count) it if the queue is full.

        `version` None: the live publication's (the one the answer came from, bar a swap in between).
        """
        self._failed[reason].inc()
        if version is None:
            version = self.live_version()
        if self.write_ids:
            entry = (time.time(), endpoint, status, reason.value, version, user_id, item_id, path, detail)
        else:
            entry = (time.time(), endpoint, status, reason.value, version)
        if len(self._pending) < self.queue_size:  # deque.append is atomic; the bound may be passed by a
            self._pending.append(entry)  # record per concurrent thread, never more
        else:
            self._dropped_full.inc()

    # --- the writer side
    def start(self) -> None:
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._drain, name="failure-log", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop the writer."""
        if self._thread is not None:
            self._stopping.set()
            self._thread.join(timeout)
            self._thread = None

    def _drain(self) -> None:
        """Every DRAIN_SECONDS, write what is pending: the writer never wakes per record (a wake-up per
        record cost the answering thread a GIL hand-off: 1.5x the CPU of a fallback answer)."""
        while True:
            stopping = self._stopping.wait(DRAIN_SECONDS)
            entries = []
            try:
                while True:
                    entries.append(self._pending.popleft())
            except IndexError:
                pass
            if entries:
                self._write(entries)
            if stopping:
                self._close()
                return

    def _write(self, entries: list[tuple]) -> None:
        try:
            for entry in entries:
                line = record_line(*entry)
                if self._file is None:
                    self._open()
                if self._size and self._size + len(line) > self.max_file_bytes:
                    self._rotate()
                self._file.write(line)
                self._size += len(line)
            if self._file is not None:
                self._file.flush()
            self._write_error_logged = False
        except (OSError, ValueError, TypeError) as error:  # a full or read-only disk loses records, never answers
            self._dropped_write.inc(len(entries))
            if not self._write_error_logged:
                log.warning(
                    "failure log: cannot write to %s: %s (records are dropped and counted)", self.directory, error
                )
                self._write_error_logged = True
            self._close()

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._file = open(self.directory / FILE_NAME, "ab")  # noqa: SIM115 - held open by the writer thread
        self._size = self._file.tell()

    def _rotate(self) -> None:
        """failures.jsonl -> .1 -> .2 ...; the file past max_files is removed (with one file: truncated)."""
        self._close()
        current = self.directory / FILE_NAME
        if self.max_files == 1:
            current.unlink(missing_ok=True)
        else:
            oldest = self.directory / f"{FILE_NAME}.{self.max_files - 1}"
            oldest.unlink(missing_ok=True)
            for number in range(self.max_files - 2, 0, -1):
                source = self.directory / f"{FILE_NAME}.{number}"
                if source.exists():
                    os.replace(source, self.directory / f"{FILE_NAME}.{number + 1}")
            os.replace(current, self.directory / f"{FILE_NAME}.1")
        self._open()

    def _close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
