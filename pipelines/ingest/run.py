"""The two ways a run chooses its batches: a data interval of landing days, or a path to import."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd

from pipelines.ingest.batch import BatchResult, BatchWindow, IngestError, ingest_batch, utc_midnight
from pipelines.ingest.impressions import ingest_impression_days
from pipelines.ingest.read_ahead import ReadAhead
from pipelines.ingest.sources import (
    CATALOG_COLUMNS,
    RECFORGE_FORMATS,
    SchemaError,
    Source,
    get_source,
    read_recforge_catalog,
    recforge_format,
)
from pipelines.ingest.stream_drain import drain_scaled_impressions
from pipelines.settings import Settings
from pipelines.simulate import catalog_file
from pipelines.warehouse.connection import Warehouse, connect

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class SkippedFile:
    """A file of a landing day or an import that was not read, and why: ``unsupported_format`` (not
    one of RECFORGE_FORMATS), ``not_a_file`` (a directory), or ``duplicate_of:<name>`` (the same
    bytes as a file of the same day or import that was read: a copy would double its raw rows).
    Recorded in raw.skipped_files and replaced with the day or the file, like its batches."""

    file: str
    reason: str


@dataclass
class IngestResult:
    interval_start: datetime
    interval_end: datetime
    batches: list[BatchResult]
    catalog_items: int
    skipped: list[SkippedFile] = field(default_factory=list)
    impressions: list[BatchResult] = field(default_factory=list)  # one per impression file (ingest/impressions.py)

    @property
    def rows_accepted(self) -> int:
        return sum(b.rows_accepted for b in self.batches)

    @property
    def rows_quarantined(self) -> int:
        return sum(b.rows_quarantined for b in self.batches)

    @property
    def rows_input(self) -> int:
        return sum(b.rows_input for b in self.batches)

    @property
    def rows_late(self) -> int:
        return sum(b.rows_late for b in self.batches)

    def summary(self) -> str:
        reasons = Counter[str]()
        for b in self.batches:
            reasons.update(b.quarantined_by_reason)
        return (
            f"ingested {len(self.batches)} file(s) for [{self.interval_start:%Y-%m-%d %H:%M}, "
            f"{self.interval_end:%Y-%m-%d %H:%M}): {self.rows_input} rows in, {self.rows_accepted} accepted "
            f"({self.rows_late} late), {self.rows_quarantined} quarantined {dict(sorted(reasons.items()))}; "
            f"catalog {self.catalog_items} items"
            + (
                f"; impressions: {len(self.impressions)} file(s), "
                f"{sum(b.rows_accepted for b in self.impressions)} slates accepted, "
                f"{sum(b.rows_quarantined for b in self.impressions)} quarantined"
                if self.impressions
                else ""
            )
            + (
                f"; skipped {len(self.skipped)} file(s): " + ", ".join(f"{s.file} ({s.reason})" for s in self.skipped)
                if self.skipped
                else ""
            )
        )


def days_in_interval(start: datetime, end: datetime) -> list[date]:
    """The landing days an interval [start, end) owns: every day whose midnight falls inside it."""
    first = start.astimezone(UTC).date()
    if datetime.combine(first, datetime.min.time(), tzinfo=UTC) < start:
        first += timedelta(days=1)
    days = []
    day = first
    while datetime.combine(day, datetime.min.time(), tzinfo=UTC) < end:
        days.append(day)
        day += timedelta(days=1)
    return days


def batch_id_for(source: str, landing_day: date | None, file: Path) -> str:
    """Stable per file, so a re-run replaces its own batch, and never shared by two files.

    A landing day's files sit in one directory, so there the name is the file (``source:day:name``);
    an imported file can come from anywhere, so its identity is its full resolved path
    (``source:import:/abs/path``): two ``events.jsonl`` from two directories are two batches.
    """
    if landing_day is not None:
        return f"{source}:{landing_day.isoformat()}:{file.name}"
    return f"{source}:import:{Path(file).resolve()}"


def landing_files(directory: Path) -> tuple[list[Path], list[SkippedFile]]:
    """The files of a landing day to read, and those skipped with their reason (never silently).

    Two files with the same content (by SHA-256) are one delivery copied twice: the first by name
    is read, the copy is skipped as ``duplicate_of:<first>``.
    """
    readable: list[Path] = []
    skipped: list[SkippedFile] = []
    for path in sorted(directory.iterdir()) if directory.is_dir() else []:
        if not path.is_file():
            skipped.append(SkippedFile(path.name, "not_a_file"))
        elif recforge_format(path) is None:
            skipped.append(SkippedFile(path.name, "unsupported_format"))
        else:
            readable.append(path)
    files, copies = without_copies(readable)
    return files, sorted(skipped + [SkippedFile(p.name, reason) for p, reason in copies], key=lambda s: s.file)


def without_copies(files: list[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """`files` with every later file of identical content left out, and those copies with their reason."""
    if len(files) < 2:  # nothing to be a copy of: no file is read twice to find out
        return list(files), []
    kept: list[Path] = []
    copies: list[tuple[Path, str]] = []
    first_with: dict[str, Path] = {}
    for path in files:
        first = first_with.setdefault(_content_digest(path), path)
        if first is path:
            kept.append(path)
        else:
            copies.append((path, f"duplicate_of:{first.name}"))
    return kept, copies


def _content_digest(path: Path) -> str:
    with path.open("rb") as content:
        return hashlib.file_digest(content, "sha256").hexdigest()


def landing_day_dir(settings: Settings, day: date) -> Path:
    return settings.landing_dir / "events" / f"date={day:%Y-%m-%d}"


def ingest_interval(
    settings: Settings, interval_start: datetime, interval_end: datetime, warehouse: Warehouse | None = None
) -> IngestResult:
    """Ingest every landing file of the days in [interval_start, interval_end), replacing those days whole.

    A landing day may hold several files (JSONL, CSV, Parquet), one batch each. Events may be
    late (up to ``late_arrival_days`` before their landing day): they keep their own event_date.
    The interval is one transaction, on its own connection; or on `warehouse`, an open connection
    the caller keeps (a run of many intervals then opens and checkpoints the database once, each
    interval still committing alone).
    """
    source = get_source("recforge")
    days = days_in_interval(interval_start, interval_end)
    plan: list[tuple[date, list[Path], list[SkippedFile]]] = []
    skipped: list[SkippedFile] = []
    for day in days:
        directory = landing_day_dir(settings, day)
        files, skipped_here = landing_files(directory)
        if not files:
            found = f" (found only {', '.join(f'{s.file}: {s.reason}' for s in skipped_here)})" if skipped_here else ""
            raise IngestError(f"no landing file for {day}: expected {directory}/*{'|'.join(RECFORGE_FORMATS)}{found}")
        day_skipped = [
            SkippedFile(str((directory / skip.file).relative_to(settings.landing_dir)), skip.reason)
            for skip in skipped_here
        ]
        for skip in day_skipped:
            log.warning("skipped %s: %s", skip.file, skip.reason)
        skipped += day_skipped
        plan.append((day, files, day_skipped))

    owned = warehouse is None
    # From here on each JSONL file's lines are read on a second thread, one file ahead of DuckDB (read_ahead.py).
    with ReadAhead(source, [path for _, files, _ in plan for path in files], settings.ingest_max_line_bytes) as ahead:
        # The scaled configuration's served slates wait in a Redis Stream: into landing files first, so the
        # day's impression files below (and retention and forgetting) see them as the embedded default's.
        drain_scaled_impressions(settings)
        with (
            connect(settings) if owned else nullcontext(warehouse) as con,
            con.appending(closing=owned),
            con.transaction(),
        ):
            catalog_items = _load_landing_catalog(con, settings)
            results = _replace_landing_days(con, settings, source, plan, ahead)
            # Served slates are their own batches (their own rules); a day without any is normal.
            impressions = ingest_impression_days(con, settings.home, days, settings.future_tolerance_seconds)
    result = IngestResult(interval_start, interval_end, results, catalog_items, skipped, impressions)
    log.info(result.summary())
    return result


def _replace_landing_days(
    con: Warehouse,
    settings: Settings,
    source: Source,
    plan: list[tuple[date, list[Path], list[SkippedFile]]],
    read_ahead: ReadAhead,
) -> list[BatchResult]:
    """Replace each planned landing day whole: its earlier batches and skipped files go, its files come in."""
    results = []
    for day, files, day_skipped in plan:
        _forget_landing_day(con, source.name, day)
        _record_skipped(con, source.name, day, day_skipped)
        window = BatchWindow(
            interval_start=utc_midnight(day),
            interval_end=utc_midnight(day) + timedelta(days=1),
            landing_date=day,
            latest_allowed=utc_midnight(day) + timedelta(days=1, seconds=settings.future_tolerance_seconds),
            earliest_allowed=utc_midnight(day) - timedelta(days=settings.late_arrival_days),
        )
        for path in files:
            display = str(path.relative_to(settings.landing_dir))
            batch_id = batch_id_for(source.name, day, path)
            results.append(_guarded(ingest_batch, con, source, path, display, batch_id, window, settings, read_ahead))
    return results


def ingest_path(settings: Settings, source_name: str, path: Path) -> IngestResult:
    """Import a file or directory through an adapter; one batch per file, replaced if imported before.

    Imported data sets are history, not a landing day: no late-arrival window applies, only the
    future check against now. The batch's landing_date is the day of its last event.
    """
    source = get_source(source_name)
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise IngestError(f"{path}: no such file or directory")
    try:
        files, copies = without_copies(source.event_files(path))
        catalog = source.catalog(path)
    except SchemaError as error:
        raise IngestError(str(error)) from error
    skipped = [SkippedFile(str(copy), reason) for copy, reason in copies]
    for skip in skipped:
        log.warning("skipped %s: %s", skip.file, skip.reason)
    now = datetime.now(UTC)
    window = BatchWindow(
        interval_start=EPOCH,
        interval_end=now,
        landing_date=now.date(),
        latest_allowed=now + timedelta(seconds=settings.future_tolerance_seconds),
        earliest_allowed=EPOCH,
    )
    results = []
    with (
        ReadAhead(source, files, settings.ingest_max_line_bytes) as read_ahead,
        connect(settings) as con,
        con.appending(closing=True),
        con.transaction(),
    ):
        if catalog is not None:
            _replace_catalog(con, catalog)
        for copy, _ in copies:  # a file imported before and now a copy of another: its old batch goes
            for table in ("raw.events", "quarantine.events", "raw.batches"):
                con.execute(f"delete from {table} where batch_id = ?", [batch_id_for(source.name, None, copy)])
        _record_skipped(con, source.name, None, skipped, replacing=[str(f) for f in files + [c for c, _ in copies]])
        for file in files:
            batch_id = batch_id_for(source.name, None, file)
            _forget_name_keyed_import(con, source.name, file)
            result = _guarded(ingest_batch, con, source, file, str(file), batch_id, window, settings, read_ahead)
            _stamp_import_interval(con, batch_id)
            result.rows_late = 0  # history has no landing day to be late for
            results.append(result)
        # Sources without a catalog (Retailrocket's events file): every item seen becomes a catalog row.
        catalog_items = _catalog_size(con, add_seen=catalog is None)
        first, last = con.execute("select min(event_ts), max(event_ts) from raw.events").fetchone()
    result = IngestResult(first or EPOCH, last or EPOCH, results, catalog_items, skipped)
    log.info(result.summary())
    return result


def _guarded(ingest, con, source, path, display, batch_id, window, settings, read_ahead=None) -> BatchResult:
    """One batch; a file that breaks the contract (or cannot be read) fails the run as an IngestError naming it.
    `read_ahead`: the run's ReadAhead, which holds (or reads) the file's lines if it is JSONL."""
    try:
        return ingest(
            con, source, path, display, batch_id, window, settings.bot_max_events_per_minute,
            settings.ingest_max_line_bytes, settings.pseudonymizer(), read_ahead.take(path) if read_ahead else None,
        )  # fmt: skip
    except SchemaError as error:
        raise IngestError(str(error)) from error


def _forget_landing_day(con: Warehouse, source: str, day: date) -> None:
    """Drop every batch an earlier run wrote for this landing day, including files since removed."""
    con.execute(
        "delete from quarantine.events where batch_id in "
        "(select batch_id from raw.batches where source = ? and landing_date = ?)",
        [source, day],
    )
    con.execute("delete from raw.events where source = ? and landing_date = ?", [source, day])
    con.execute("delete from raw.batches where source = ? and landing_date = ?", [source, day])
    con.execute("delete from raw.skipped_files where source = ? and landing_date = ?", [source, day])


def _record_skipped(
    con: Warehouse, source: str, day: date | None, skipped: list[SkippedFile], replacing: list[str] = ()
) -> None:
    """Write a run's skipped files to raw.skipped_files: a landing day's rows are replaced with the
    day (by _forget_landing_day); an import replaces the rows of the files it covers (`replacing`)."""
    for file in replacing:
        con.execute(
            "delete from raw.skipped_files where source = ? and landing_date is null and file = ?", [source, file]
        )
    now = datetime.now(UTC)
    for skip in skipped:
        con.execute(
            "insert into raw.skipped_files (source, landing_date, file, reason, skipped_at) values (?, ?, ?, ?, ?)",
            [source, day, skip.file, skip.reason, now],
        )


def _forget_name_keyed_import(con: Warehouse, source: str, file: Path) -> None:
    """Drop this file's batch from before import ids were paths (``source:import:<name>``), so
    re-importing it replaces it instead of keeping both (and quarantining its own events as
    duplicates of the old batch). Only a batch recorded for this very path is dropped."""
    legacy = f"{source}:import:{file.name}"
    recorded = con.execute("select batch_id from raw.batches where batch_id = ? and file = ?", [legacy, str(file)])
    if recorded.fetchall():
        for table in ("raw.events", "quarantine.events", "raw.batches"):
            con.execute(f"delete from {table} where batch_id = ?", [legacy])


def _stamp_import_interval(con: Warehouse, batch_id: str) -> None:
    """An imported file's interval is the span of its accepted events; its landing day is the last one."""
    con.execute(
        """
        update raw.batches set
            interval_start = coalesce(span.first_ts, raw.batches.interval_start),
            interval_end = coalesce(span.last_ts, raw.batches.interval_end),
            landing_date = coalesce(cast(span.last_ts as date), raw.batches.landing_date),
            rows_late = 0
        from (select min(event_ts) as first_ts, max(event_ts) as last_ts from raw.events where batch_id = ?) as span
        where batch_id = ?
        """,
        [batch_id, batch_id],
    )
    con.execute(
        "update raw.events set landing_date = (select landing_date from raw.batches where batch_id = ?) "
        "where batch_id = ?",
        [batch_id, batch_id],
    )
    con.execute(
        "update quarantine.events set landing_date = (select landing_date from raw.batches where batch_id = ?) "
        "where batch_id = ?",
        [batch_id, batch_id],
    )


def _load_landing_catalog(con: Warehouse, settings: Settings) -> int:
    """Replace raw.items with the landing catalog, unless it is the very file raw.items was last loaded
    from (same SHA-256, raw.items still holding its rows): a daily run then skips parsing thousands
    of items and rewriting the table to the same content. Returns the catalog's item count."""
    path = catalog_file(settings.landing_dir)
    if not path.exists():
        raise IngestError(f"item catalog missing: {path}")
    digest = _content_digest(path)
    loaded = con.execute("select sha256, items from raw.catalog_snapshot").fetchall()
    if len(loaded) == 1 and loaded[0][0] == digest:
        if con.execute("select count(*) from raw.items").fetchone()[0] == loaded[0][1]:
            return loaded[0][1]
    items = _replace_catalog(con, read_recforge_catalog_or_fail(settings))
    con.execute(
        "insert into raw.catalog_snapshot (file, sha256, items, loaded_at) values (?, ?, ?, ?)",
        [str(path), digest, items, datetime.now(UTC)],
    )
    return items


def read_recforge_catalog_or_fail(settings: Settings) -> pd.DataFrame:
    path = catalog_file(settings.landing_dir)
    if not path.exists():
        raise IngestError(f"item catalog missing: {path}")
    try:
        return read_recforge_catalog(path)
    except SchemaError as error:
        raise IngestError(str(error)) from error


def _replace_catalog(con: Warehouse, items: pd.DataFrame) -> int:
    """Replace raw.items with a catalog snapshot (it is small and always complete)."""
    con.execute("delete from raw.catalog_snapshot")  # raw.items is no longer what a recorded file gave
    con.execute("delete from raw.items")
    con.append_frame("raw.items", items[CATALOG_COLUMNS])
    return len(items)


def _catalog_size(con: Warehouse, add_seen: bool) -> int:
    """Items in the catalog; with `add_seen`, first add every item seen in events that it lacks."""
    if add_seen:
        con.execute("delete from raw.catalog_snapshot")  # raw.items gains rows no catalog file has
        con.execute(
            """
            insert into raw.items (item_id, in_stock, is_blocked)
            select distinct item_id, true, false from raw.events
            where item_id not in (select item_id from raw.items)
            """
        )
    return con.execute("select count(*) from raw.items").fetchone()[0]
