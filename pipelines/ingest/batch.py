"""Ingest one file as one batch: classify every row, replace the batch's rows, record its counts.

Why it is shaped like this:
- A batch id is stable for a file (source, landing day and file name; for an import, source and
  the file's full resolved path), so re-running replaces exactly that batch's rows: a retry or a
  backfill can never duplicate anything, and two files that share a name are two batches.
- Every input row ends up in exactly one place: ``raw.events`` or ``quarantine.events`` (with
  its raw content and a reason code). ``raw.batches`` records the counts by outcome, and the
  batch is refused (nothing written) unless accepted + quarantined = input.
- The caller owns the transaction, so an interval of several files commits all or nothing.
- The rules run in DuckDB whatever the warehouse (`Warehouse.sql_engine`): on PostgreSQL in an
  in-memory DuckDB, fed the event ids PostgreSQL already holds, and the outcome is copied across.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from pipelines.contract import EVENT_TYPES
from pipelines.ingest.errors import IngestError
from pipelines.ingest.sources import Source
from pipelines.privacy.pseudonyms import pseudonymize_batch
from pipelines.warehouse.connection import Warehouse
from serving.ids import ID_CHARACTERS_REGEX, MAX_ID_LENGTH

log = logging.getLogger(__name__)

CLASSIFY_SQL = Path(__file__).resolve().parent / "sql" / "classify_events.sql"

# raw.events.event_date, the UTC day of event_ts, by arithmetic on its microseconds: what
# cast(event_ts as date) gives on a UTC session, at a third of its cost (the cast goes through ICU's calendar).
EVENT_UTC_DAY = "date '1970-01-01' + cast(fdiv(epoch_us(event_ts), 86400000000) as integer)"


def utc_midnight(day: date) -> datetime:
    """The first instant of a UTC day: where a landing day starts, and before which an event is late."""
    return datetime.combine(day, datetime.min.time(), tzinfo=UTC)


@dataclass
class BatchResult:
    batch_id: str
    file: str
    rows_input: int
    rows_accepted: int
    rows_quarantined: int
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    rows_late: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"{self.file}: {self.rows_input} in = {self.rows_accepted} accepted + {self.rows_quarantined} "
            f"quarantined {self.quarantined_by_reason}; {self.rows_late} late; {self.seconds:.1f}s"
        )


@dataclass(frozen=True)
class BatchWindow:
    """What a batch may contain: events up to `latest_allowed`, and no earlier than `earliest_allowed`."""

    interval_start: datetime
    interval_end: datetime
    landing_date: date
    latest_allowed: datetime
    earliest_allowed: datetime


def ingest_batch(
    warehouse: Warehouse,
    source: Source,
    path: Path,
    display_name: str,
    batch_id: str,
    window: BatchWindow,
    bot_max_events_per_minute: int,
    max_line_bytes: int,
    pseudonymize=None,
    lines: pa.Table | None = None,
) -> BatchResult:
    """Classify `path` and replace batch `batch_id` with its rows; the caller commits.

    `pseudonymize` (serving.pseudonyms.Pseudonymizer, when RECFORGE_PSEUDONYMIZE_USER_IDS is on)
    replaces every user id, and protects the quarantined raw content, before anything is written.
    `lines`: a JSONL file's lines already read (pipelines/ingest/read_ahead.py); read here if None.
    """
    started = datetime.now(UTC)
    con = warehouse.sql_engine
    try:
        source.stage(con, path, max_line_bytes, lines)
    except duckdb.Error as error:
        raise IngestError(f"{display_name}: cannot read as {source.name}: {error}") from error
    if warehouse.dialect != "duckdb":
        _mirror_accepted_before(warehouse, batch_id, window.landing_date)
    con.execute(
        CLASSIFY_SQL.read_text(),
        {
            "latest_allowed": window.latest_allowed,
            "earliest_allowed": window.earliest_allowed,
            "landing_date": window.landing_date,
            "batch_id": batch_id,
            "bot_max_events_per_minute": bot_max_events_per_minute,
            "event_types": list(EVENT_TYPES),
            "max_id_length": MAX_ID_LENGTH,
            "id_characters": ID_CHARACTERS_REGEX,
        },
    )
    rows_input = con.execute("select count(*) from incoming").fetchone()[0]
    by_reason = dict(con.execute("select reason, count(*) from classified group by reason order by reason").fetchall())
    accepted, late = con.execute(
        "select count(*), count(*) filter (where event_ts < ?) from incoming anti join classified using (line_number)",
        [utc_midnight(window.landing_date)],  # late: before its landing day
    ).fetchone()
    quarantined = sum(by_reason.values())
    if accepted + quarantined != rows_input:
        raise IngestError(f"{display_name}: {rows_input} rows in but {accepted} accepted + {quarantined} quarantined")

    if pseudonymize is not None:
        pseudonymize_batch(con, pseudonymize)
    warehouse.execute("delete from raw.events where batch_id = ?", [batch_id])
    warehouse.execute("delete from quarantine.events where batch_id = ?", [batch_id])
    warehouse.execute("delete from raw.batches where batch_id = ?", [batch_id])
    warehouse.insert_from_engine(
        "raw.events",
        f"""
        select event_id, user_id, item_id, event_type, event_ts, value, session_id, context,
               ? as source, ? as batch_id, ? as landing_date, ? as ingested_at, {EVENT_UTC_DAY} as event_date
        from incoming anti join classified using (line_number)
        """,
        [source.name, batch_id, window.landing_date, started],
    )
    warehouse.insert_from_engine(
        "quarantine.events",
        """
        select ? as batch_id, ? as landing_date, ? as file, line_number, reason, raw, ? as ingested_at
        from classified join incoming using (line_number)
        """,
        [batch_id, window.landing_date, display_name, started],
    )
    for table in ("incoming", "classified", "incoming_docs", "incoming_rows", "incoming_rejects"):
        con.execute(f"drop table if exists {table}")
    con.execute("drop table if exists incoming_rejects_scans")
    result = record_batch(
        warehouse, batch_id, source.name, window.interval_start, window.interval_end, display_name,
        window.landing_date, started, rows_input, accepted, quarantined, by_reason, late,
    )  # fmt: skip
    log.info(result.summary())
    return result


def record_batch(
    warehouse: Warehouse,
    batch_id: str,
    source: str,
    interval_start: datetime,
    interval_end: datetime,
    file: str,
    landing_date: date,
    started: datetime,
    rows_input: int,
    accepted: int,
    quarantined: int,
    by_reason: dict[str, int],
    late: int,
) -> BatchResult:
    """A batch's row of raw.batches (accepted + quarantined = input), and the result that reports it.

    The one writer of raw.batches for event files and impression files alike.
    """
    finished = datetime.now(UTC)
    warehouse.execute(
        """
        insert into raw.batches (batch_id, source, interval_start, interval_end, file, rows_input, rows_accepted,
                                 rows_quarantined, quarantined_by_reason, started_at, finished_at, landing_date,
                                 rows_late)
        values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        """,
        [
            batch_id, source, interval_start, interval_end, file, rows_input, accepted, quarantined,
            json.dumps(by_reason), started, finished, landing_date, late,
        ],
    )  # fmt: skip
    return BatchResult(
        batch_id, file, rows_input, accepted, quarantined, by_reason, late, (finished - started).total_seconds()
    )


def _mirror_accepted_before(warehouse: Warehouse, batch_id: str, landing_date: date) -> None:
    """Give the in-memory rule engine the `raw.events` rows the cross-batch duplicate rule looks at.

    That rule (classify_events.sql, `accepted_before`) reads raw.events; off DuckDB those rows live
    in the warehouse, so the ids of this batch already accepted there from an earlier landing day
    by another batch are copied into the engine's own raw.events first (only those: a batch's
    ids, not the whole history, cross over).
    """
    con = warehouse.sql_engine
    ids = con.execute("select distinct event_id from incoming where event_id is not null").fetch_df()
    warehouse.execute("create temp table if not exists incoming_event_ids (event_id varchar not null)")
    warehouse.execute("truncate incoming_event_ids")
    warehouse.append_frame("incoming_event_ids", ids)
    prior = warehouse.execute(
        "select distinct raw_events.event_id, raw_events.landing_date, raw_events.batch_id "
        "from raw.events as raw_events join incoming_event_ids using (event_id) "
        "where raw_events.landing_date < ? and raw_events.batch_id <> ?",
        [landing_date, batch_id],
    ).fetch_df()
    con.execute("create schema if not exists raw")
    con.execute("create or replace table raw.events (event_id varchar, landing_date date, batch_id varchar)")
    con.register("prior_rows", prior)
    con.execute("insert into raw.events select event_id, cast(landing_date as date), batch_id from prior_rows")
    con.unregister("prior_rows")
