"""Ingest one file as one batch: classify every row, replace the batch's rows, record its counts.

Why it is shaped like this:
- A batch id is stable for a file (source, landing day, file name), so re-running replaces
  exactly that batch's rows: a retry or a backfill can never duplicate anything.
- Every input row ends up in exactly one place: ``raw.events`` or ``quarantine.events`` (with
  its raw content and a reason code). ``raw.batches`` records the counts by outcome, and the
  batch is refused (nothing written) unless accepted + quarantined = input.
- The caller owns the transaction, so an interval of several files commits all or nothing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb

from pipelines.contract import EVENT_TYPES
from pipelines.ingest.sources import Source

log = logging.getLogger(__name__)

CLASSIFY_SQL = Path(__file__).resolve().parent.parent / "sql" / "ingest" / "classify_events.sql"


class IngestError(RuntimeError):
    """A batch that cannot be ingested at all (as opposed to rows that are quarantined)."""


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
    con: duckdb.DuckDBPyConnection,
    source: Source,
    path: Path,
    display_name: str,
    batch_id: str,
    window: BatchWindow,
    bot_max_events_per_minute: int,
) -> BatchResult:
    """Classify `path` and replace batch `batch_id` with its rows; the caller commits."""
    started = datetime.now(UTC)
    try:
        source.stage(con, path)
    except duckdb.Error as error:
        raise IngestError(f"{display_name}: cannot read as {source.name}: {error}") from error
    con.execute(
        CLASSIFY_SQL.read_text(),
        {
            "latest_allowed": window.latest_allowed,
            "earliest_allowed": window.earliest_allowed,
            "landing_date": window.landing_date,
            "batch_id": batch_id,
            "bot_max_events_per_minute": bot_max_events_per_minute,
            "event_types": list(EVENT_TYPES),
        },
    )
    rows_input = con.execute("select count(*) from incoming").fetchone()[0]
    by_reason = dict(
        con.execute(
            "select reason, count(*) from classified where reason is not null group by reason order by reason"
        ).fetchall()
    )
    accepted, late = con.execute(
        "select count(*), count(*) filter (where cast(event_ts as date) < ?) from classified where reason is null",
        [window.landing_date],
    ).fetchone()
    quarantined = sum(by_reason.values())
    if accepted + quarantined != rows_input:
        raise IngestError(f"{display_name}: {rows_input} rows in but {accepted} accepted + {quarantined} quarantined")

    con.execute("delete from raw.events where batch_id = ?", [batch_id])
    con.execute("delete from quarantine.events where batch_id = ?", [batch_id])
    con.execute("delete from raw.batches where batch_id = ?", [batch_id])
    con.execute(
        """
        insert into raw.events (event_id, user_id, item_id, event_type, event_ts, value, session_id, context,
                                source, batch_id, landing_date, ingested_at, event_date)
        select event_id, user_id, item_id, event_type, event_ts, value, session_id, context,
               ?, ?, ?, ?, cast(event_ts as date)
        from classified where reason is null
        """,
        [source.name, batch_id, window.landing_date, started],
    )
    con.execute(
        """
        insert into quarantine.events (batch_id, landing_date, file, line_number, reason, raw, ingested_at)
        select ?, ?, ?, line_number, reason, raw, ? from classified where reason is not null
        """,
        [batch_id, window.landing_date, display_name, started],
    )
    finished = datetime.now(UTC)
    con.execute(
        """
        insert into raw.batches (batch_id, source, interval_start, interval_end, file, rows_input, rows_accepted,
                                 rows_quarantined, quarantined_by_reason, started_at, finished_at, landing_date,
                                 rows_late)
        values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        """,
        [
            batch_id, source.name, window.interval_start, window.interval_end, display_name, rows_input, accepted,
            quarantined, json.dumps(by_reason), started, finished, window.landing_date, late,
        ],
    )  # fmt: skip
    for table in ("incoming", "classified", "incoming_docs", "incoming_rows"):
        con.execute(f"drop table if exists {table}")
    result = BatchResult(
        batch_id, display_name, rows_input, accepted, quarantined, by_reason, late, (finished - started).total_seconds()
    )
    log.info(result.summary())
    return result
