"""Segment files: the collector's durable log on the embedded default, and the layout ingest reads.

Layout (``RECFORGE_HOME/landing/stream/``)::

    date=YYYY-MM-DD/<opened at, UTC>-p<pid>-<n>.jsonl.open   being written (ingest never reads it)
    date=YYYY-MM-DD/<opened at, UTC>-p<pid>-<n>.jsonl        closed: complete, never written again
    torn/date=YYYY-MM-DD/<segment>.torn                      an unfinished last line cut off at recovery

One event per line, as JSON (the recforge JSONL format, so ingest reads a closed segment with its
ordinary adapter). The day is the UTC day the events arrived: their landing day, the day whose
time window the collector checked them against. A segment is closed by renaming it (atomic; the
file and its directory are fsynced first) once it holds ``max_bytes``, ``max_seconds`` after it
was opened, at UTC midnight, and when the server stops. Sorting closed names sorts them by time.

Group commit: requests hand their encoded events to ``append`` and wait; one I/O thread writes
everything pending in one ``write`` and covers it with one ``fdatasync``, then acknowledges all
of it. Whatever arrives during that fsync waits for the next one, so one fsync covers every
request of a few milliseconds: that is what lets one core acknowledge tens of thousands of
durable events a second when a single fsync takes milliseconds.

Crash safety: acknowledged events are whole lines fsynced before the answer. A process killed
mid-write (SIGKILL, OOM) can leave a last line without its newline, never acknowledged. The next
collector to start finds segments still ``.open`` whose writer is gone (each writer holds an
exclusive ``flock`` on its open segments, which the kernel drops when the process dies), moves
the bytes after the last newline to ``torn/`` (nothing is deleted), and closes the rest.
A failed write is cut back to where the group began, so a failure leaves no partial line either.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

log = logging.getLogger(__name__)

OPEN_SUFFIX = ".jsonl.open"
CLOSED_SUFFIX = ".jsonl"
TORN_DIR = "torn"
TORN_SUFFIX = ".torn"
ROLL_CHECK_SECONDS = 0.5


class CollectorUnavailable(RuntimeError):
    """Events could not be made durable (disk full, I/O error, Redis down): nothing was acknowledged."""


def day_dir(root: Path, day: date) -> Path:
    return root / f"date={day:%Y-%m-%d}"


def closed_segments(root: Path) -> list[Path]:
    """Every closed segment under `root`, oldest first: what ingest may read."""
    return sorted(root.glob(f"date=*/*{CLOSED_SUFFIX}"), key=lambda p: (p.parent.name, p.name))


def open_segments(root: Path) -> list[Path]:
    return sorted(root.glob(f"date=*/*{OPEN_SUFFIX}"))


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@dataclass
class _Segment:
    path: Path  # the .open name
    fd: int
    opened: float  # monotonic
    day: date
    size: int = 0
    dirty: bool = False  # written since the last fdatasync


@dataclass(frozen=True)
class Recovery:
    segments: int
    lines: int
    torn_bytes: int

    def summary(self) -> str:
        torn = f", {self.torn_bytes} byte(s) of an unfinished last line moved to {TORN_DIR}/" if self.torn_bytes else ""
        return f"recovered {self.segments} segment(s) a stopped collector left open: {self.lines} event(s) kept{torn}"


def recover(root: Path) -> Recovery:
    """Close every ``.open`` segment whose writer is gone, cutting an unfinished last line off to ``torn/``."""
    segments = lines = torn_total = 0
    for path in open_segments(root):
        fd = os.open(path, os.O_RDWR)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live collector (another worker) is writing it
            size = os.fstat(fd).st_size
            data = os.pread(fd, size, 0)
            keep = data.rfind(b"\n") + 1
            if keep < size:
                torn = root / TORN_DIR / path.parent.name / (path.name.removesuffix(OPEN_SUFFIX) + TORN_SUFFIX)
                torn.parent.mkdir(parents=True, exist_ok=True)
                with open(torn, "ab") as out:
                    out.write(data[keep:])
                    out.flush()
                    os.fsync(out.fileno())
                fsync_dir(torn.parent)
                os.ftruncate(fd, keep)
                torn_total += size - keep
                log.warning("%s: %d byte(s) after the last complete event moved to %s", path, size - keep, torn)
            os.fsync(fd)
            if keep == 0:
                path.unlink()
            else:
                path.rename(path.with_name(path.name.removesuffix(OPEN_SUFFIX) + CLOSED_SUFFIX))
                lines += data.count(b"\n", 0, keep)
            fsync_dir(path.parent)
            segments += 1
        finally:
            os.close(fd)
    return Recovery(segments, lines, torn_total)


class SegmentWriter:
    """Appends events to segment files with group commit; ``append`` returns once they are durable."""

    def __init__(
        self,
        root: Path,
        *,
        fsync: bool = True,
        max_bytes: int = 64 << 20,
        max_seconds: float = 60.0,
        commit_delay_seconds: float = 0.0,
        on_commit: Callable[[int, float], None] | None = None,
    ):
        self.root = root
        self.fsync = fsync
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.commit_delay_seconds = commit_delay_seconds
        self.on_commit = on_commit  # (events, seconds) per group, for the metrics
        self._io = ThreadPoolExecutor(1, thread_name_prefix="segment-io")  # all file work, in order
        self._segments: dict[date, _Segment] = {}  # touched only in the I/O thread
        self._pending: list[tuple[date, bytes, int, asyncio.Future]] = []
        self._committing = False
        self._sequence = 0
        self._roller: asyncio.Task | None = None

    # --- the event loop's side

    async def start(self) -> Recovery:
        self.root.mkdir(parents=True, exist_ok=True)
        recovery = await asyncio.get_running_loop().run_in_executor(self._io, recover, self.root)
        if recovery.segments:
            log.info(recovery.summary())
        self._roller = asyncio.create_task(self._roll_periodically())
        return recovery

    async def append(self, day: date, lines: list[bytes]) -> None:
        """Make `lines` (one JSON event each, without newline) durable in `day`'s segment."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((day, b"\n".join(lines) + b"\n", len(lines), future))
        if not self._committing:
            self._committing = True
            asyncio.create_task(self._commit_while_pending())
        await future

    async def stop(self) -> None:
        """Let pending commits finish, then close every open segment."""
        if self._roller is not None:
            self._roller.cancel()
        while self._committing:
            await asyncio.sleep(0.001)
        await asyncio.get_running_loop().run_in_executor(self._io, self._close_all)
        self._io.shutdown(wait=True)

    async def _commit_while_pending(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                if self.commit_delay_seconds:
                    await asyncio.sleep(self.commit_delay_seconds)
                group, self._pending = self._pending, []
                started = time.perf_counter()
                try:
                    await loop.run_in_executor(self._io, self._write_group, [(d, b) for d, b, _, _ in group])
                except OSError as error:
                    failure = CollectorUnavailable(f"events not stored: {error.strerror or error}")
                    for *_, future in group:
                        if not future.done():
                            future.set_exception(failure)
                    continue
                if self.on_commit is not None:
                    self.on_commit(sum(n for _, _, n, _ in group), time.perf_counter() - started)
                for *_, future in group:
                    if not future.done():  # a client that went away cancelled its wait
                        future.set_result(None)
        finally:
            self._committing = False

    async def _roll_periodically(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(ROLL_CHECK_SECONDS, self.max_seconds / 2))
            try:
                await loop.run_in_executor(self._io, self._close_due)
            except OSError as error:
                log.error("closing a segment failed (it stays open and is retried): %s", error)

    # --- the I/O thread's side

    def _write_group(self, group: list[tuple[date, bytes]]) -> None:
        by_day: dict[date, list[bytes]] = {}
        for day, lines in group:
            by_day.setdefault(day, []).append(lines)
        touched = []
        for day, parts in by_day.items():
            segment = self._segment_for(day)
            data = b"".join(parts)
            try:
                _write_all(segment.fd, data)
            except OSError:
                self._cut_back(segment)
                raise
            segment.size += len(data)
            segment.dirty = True
            touched.append(segment)
        if self.fsync:
            for segment in touched:
                try:
                    os.fdatasync(segment.fd)
                except OSError:
                    # After a failed fsync the kernel may have dropped the dirty pages: what the
                    # file holds is unknown, so nothing more goes into it (it is closed as it is).
                    self._retire(segment)
                    raise
                segment.dirty = False
        for segment in touched:
            if segment.size >= self.max_bytes:
                self._close(segment)

    def _segment_for(self, day: date) -> _Segment:
        segment = self._segments.get(day)
        if segment is not None:
            return segment
        directory = day_dir(self.root, day)
        directory.mkdir(parents=True, exist_ok=True)
        self._sequence += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        path = directory / f"{stamp}-p{os.getpid()}-{self._sequence:06d}{OPEN_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)  # held while this process writes it: recovery leaves it alone
        fsync_dir(directory)  # the new name itself must survive a crash, or its events would not
        segment = self._segments[day] = _Segment(path, fd, time.monotonic(), day)
        return segment

    def _cut_back(self, segment: _Segment) -> None:
        """After a failed write, remove whatever part of the group reached the file."""
        try:
            os.ftruncate(segment.fd, segment.size)
        except OSError:
            self._retire(segment)

    def _retire(self, segment: _Segment) -> None:
        """Stop writing a segment whose state is unknown; the next start's recovery closes it."""
        self._segments.pop(segment.day, None)
        os.close(segment.fd)  # drops the flock: a restart, or another worker's recovery, may close it

    def _close(self, segment: _Segment) -> None:
        os.fsync(segment.fd)  # a closed segment is complete on disk, whatever `fsync` says
        closed = segment.path.with_name(segment.path.name.removesuffix(OPEN_SUFFIX) + CLOSED_SUFFIX)
        segment.path.rename(closed)
        fsync_dir(segment.path.parent)
        self._segments.pop(segment.day, None)
        os.close(segment.fd)

    def _close_due(self) -> None:
        today = datetime.now(UTC).date()
        now = time.monotonic()
        for segment in list(self._segments.values()):
            if segment.day < today or now - segment.opened >= self.max_seconds:
                self._close(segment)

    def _close_all(self) -> None:
        for segment in list(self._segments.values()):
            self._close(segment)
