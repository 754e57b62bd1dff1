"""Retention: purge events older than RECFORGE_RETENTION_DAYS, daily, through forgetting's own walkers.

The stores and the walkers are forget's (``pipelines/privacy/forget.py``), given the selection
"rows older than the cutoff" instead of "rows of these users":
1. ``landing_files``: every landing file loses the rows whose time (an event's ``event_ts``, a
   served slate's ``served_at`` in ``landing/impressions/``) is before the cutoff
   (JSONL, CSV, gzip, Parquet, JSON documents; a row whose time cannot be read is kept, ingest
   quarantines it); a file left with no event is deleted.
2. ``raw_events`` (``event_ts`` before the cutoff), ``impressions`` (served slates by ``served_at``),
   ``quarantine`` of both (rows of landing days before the cutoff's day: a quarantined row may have
   no readable time) and ``batches`` (their counts lose the removed rows, so accepted + quarantined
   = input still holds), in one transaction; any other raw or monitoring table with a time column
   the same way.
3. ``dbt_models``: ``dbt build --full-refresh`` (the incremental ``int_events_deduped`` included).
4. ``warehouse_file``: the DuckDB file rewritten into a fresh one (PostgreSQL: ``VACUUM FULL``).
Models and publications are derived data and are not rewritten: the next training sees only
retained events. The audit (``monitoring.retention_runs`` and ``reports/privacy/retention-*.json``)
keeps the cutoff and the rows removed per store, like a forget request's.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from pipelines.privacy.forget import (
    RAW_SOURCES,
    StoreOutcome,
    _replace_bytes,
    accepted_outcomes,
    compact_warehouse,
    rebuild_dbt_models,
    remove_landing_rows,
    remove_raw_rows,
)
from pipelines.settings import Settings
from serving.events import parse_event_ts

log = logging.getLogger(__name__)

# The columns that date a row: an event's time, a served slate's time (each source's, defined once in forget).
TIME_COLUMNS = tuple(source.time_column for source in RAW_SOURCES)


class OlderThan:
    """Which rows of a landing file are older than `cutoff`, by their time column (``TIME_COLUMNS``: an event's
    ``event_ts``, an impression file's ``served_at``)."""

    def __init__(self, cutoff: datetime):
        self.cutoff = cutoff

    def in_file(self, decoded: bytes) -> bool:
        return True  # any file may hold old events (a Parquet file's decoded text has no column names)

    def _old(self, text) -> bool:
        instant = parse_event_ts(text) if isinstance(text, str) else None
        return instant is not None and instant < self.cutoff

    def _record_old(self, record) -> bool:
        if not isinstance(record, dict):
            return False
        return any(self._old(record[column]) for column in TIME_COLUMNS if column in record)

    def line(self, line: bytes, header: list[str] | None) -> bool:
        if header is not None:  # CSV
            from pipelines.privacy.forget import _csv_fields

            fields = _csv_fields(line)
            positions = [header.index(column) for column in TIME_COLUMNS if column in header]
            return any(p < len(fields) and self._old(fields[p]) for p in positions)
        try:
            record = json.loads(line)
        except ValueError:
            return False
        return self._record_old(record)

    def value(self, value) -> bool:
        return self._record_old(value)

    def key(self, key: str) -> bool:
        return False

    def parquet_mask(self, table):
        import pyarrow as pa
        import pyarrow.compute as pc

        column_name = next((c for c in TIME_COLUMNS if c in table.column_names), None)
        if column_name is None:
            return None
        column = table.column(column_name)
        if not pa.types.is_timestamp(column.type):
            column = pc.cast(column, pa.timestamp("us", tz="UTC"), safe=False)
        elif column.type.tz is None:
            column = pc.assume_timezone(column, "UTC")
        return pc.fill_null(pc.less(column, pa.scalar(self.cutoff, type=pa.timestamp("us", tz="UTC"))), False)


@dataclass
class RetentionResult:
    run_id: str
    ran_at: datetime
    retention_days: int
    cutoff: datetime | None
    stores: list[StoreOutcome] = field(default_factory=list)
    finished_at: datetime | None = None

    @property
    def rows_removed(self) -> int:
        return sum(outcome.rows_removed for outcome in self.stores)

    def summary(self) -> str:
        if self.cutoff is None:
            return "retention: off (RECFORGE_RETENTION_DAYS=0): nothing purged"
        touched = ", ".join(f"{o.store} {o.rows_removed}" for o in self.stores if o.rows_removed)
        return (
            f"retention {self.run_id}: events before {self.cutoff:%Y-%m-%d %H:%M} UTC ({self.retention_days} days): "
            f"{self.rows_removed} rows removed ({touched or 'nothing was that old'})"
        )


def purge_expired(settings: Settings, now: datetime | None = None, progress=log.info) -> RetentionResult:
    """Purge every event older than `retention_days` before `now` from every store forgetting reaches."""
    from pipelines.warehouse.connection import connect, warehouse_exists

    now = now or datetime.now(UTC)
    days = settings.retention_days
    result = RetentionResult(uuid.uuid4().hex, now, days, None if days == 0 else now - timedelta(days=days))
    if result.cutoff is None:
        log.info(result.summary())
        return result
    cutoff = result.cutoff
    settings.ensure_dirs()
    progress(f"retention {result.run_id}: landing files...")
    result.stores.append(remove_landing_rows(settings, OlderThan(cutoff), "landing_files", delete_emptied=True))
    if warehouse_exists(settings):
        progress(f"retention {result.run_id}: raw events, quarantine, batches...")
        with connect(settings) as con, con.transaction():
            accepted, quarantined, batches = {}, 0, 0
            for source in RAW_SOURCES:
                # A quarantined row may have no readable time: its landing day dates it.
                doomed = con.execute(
                    f"select batch_id, {source.quarantine_number}, reason from {source.quarantine_table} "
                    "where landing_date < ?",
                    [cutoff.date()],
                ).fetchall()
                where = f"{source.time_column} < ?"
                accepted[source], recounted = remove_raw_rows(con, source, where, [cutoff], doomed)
                quarantined += len(doomed)
                batches += recounted
            other = _purge_other_timed_tables(con, cutoff)
        result.stores += [
            *accepted_outcomes(accepted),
            StoreOutcome("quarantine", quarantined, f"rows of landing days before {cutoff.date()}"),
            StoreOutcome("batches", batches, "batches whose counts lost the removed rows"),
            other,
        ]
        progress(f"retention {result.run_id}: dbt build --full-refresh...")
        result.stores.append(rebuild_dbt_models(settings, {c: (f"{c} < ?", [cutoff]) for c in TIME_COLUMNS}))
        result.stores.append(compact_warehouse(settings, []))
    result.finished_at = datetime.now(UTC)
    record_retention(settings, result)
    log.info(result.summary())
    return result


def _purge_other_timed_tables(con, cutoff: datetime) -> StoreOutcome:
    """Other raw and monitoring tables dated by a time column: their rows before the cutoff."""
    removed, tables = 0, []
    marks = ", ".join("?" for _ in TIME_COLUMNS)
    found = con.execute(
        "select table_schema, table_name, column_name from information_schema.columns "
        f"where column_name in ({marks}) and table_schema in ('raw', 'monitoring') order by 1, 2, 3",
        list(TIME_COLUMNS),
    ).fetchall()
    sources = {source.raw_table for source in RAW_SOURCES}
    for schema, table, column in found:
        if f"{schema}.{table}" in sources:
            continue
        count = con.execute(f'select count(*) from {schema}."{table}" where {column} < ?', [cutoff]).fetchone()[0]
        if count:
            con.execute(f'delete from {schema}."{table}" where {column} < ?', [cutoff])
            removed += count
            tables.append(f"{schema}.{table}")
    return StoreOutcome("other_timed_tables", removed, ", ".join(tables) or "none held such rows")


def record_retention(settings: Settings, result: RetentionResult) -> None:
    """One row per run in monitoring.retention_runs, and reports/privacy/retention-<run>.json."""
    from pipelines.warehouse.connection import connect, warehouse_exists

    stores = [asdict(o) for o in result.stores]
    if warehouse_exists(settings):
        with connect(settings) as con, con.transaction():
            con.execute(
                "insert into monitoring.retention_runs (run_id, ran_at, finished_at, retention_days, cutoff, stores, "
                "rows_removed) values (?, ?, ?, ?, ?, ?, ?)",
                [result.run_id, result.ran_at, result.finished_at, result.retention_days, result.cutoff,
                 json.dumps(stores), result.rows_removed],
            )  # fmt: skip
    directory = settings.reports_dir / "privacy"
    directory.mkdir(parents=True, exist_ok=True)
    record = {
        "run_id": result.run_id,
        "ran_at": result.ran_at.isoformat(),
        "finished_at": result.finished_at.isoformat() if result.finished_at else None,
        "retention_days": result.retention_days,
        "cutoff": result.cutoff.isoformat() if result.cutoff else None,
        "stores": stores,
        "rows_removed": result.rows_removed,
    }
    _replace_bytes(directory / f"retention-{result.run_id}.json", (json.dumps(record, indent=2) + "\n").encode())


__all__ = ["OlderThan", "RetentionResult", "purge_expired"]
