"""Ingest landing files into the DuckDB raw layer, one data interval at a time.

Why it is shaped like this:
- A run owns exactly the landing files of its data interval and replaces their rows
  in one transaction, so a retry or a backfill can never duplicate anything.
- Every input line ends up in exactly one place: ``raw.events`` or
  ``quarantine.events`` (with its raw text and a reason code). The batch row in
  ``raw.batches`` records the counts, and the function refuses to commit if
  accepted + quarantined != input.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd

from pipelines.settings import EVENT_TYPES, Settings
from pipelines.simulate import catalog_file, landing_file_for
from pipelines.warehouse import connect

log = logging.getLogger(__name__)

SOURCE = "recforge_jsonl"
EVENT_COLUMNS = ["event_id", "user_id", "item_id", "event_type", "event_ts", "value", "session_id", "context"]


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


@dataclass
class IngestResult:
    interval_start: datetime
    interval_end: datetime
    batches: list[BatchResult]
    catalog_items: int

    @property
    def rows_accepted(self) -> int:
        return sum(b.rows_accepted for b in self.batches)

    @property
    def rows_quarantined(self) -> int:
        return sum(b.rows_quarantined for b in self.batches)

    @property
    def rows_input(self) -> int:
        return sum(b.rows_input for b in self.batches)

    def summary(self) -> str:
        reasons = Counter[str]()
        for b in self.batches:
            reasons.update(b.quarantined_by_reason)
        return (
            f"ingested {len(self.batches)} file(s) for [{self.interval_start:%Y-%m-%d %H:%M}, "
            f"{self.interval_end:%Y-%m-%d %H:%M}): {self.rows_input} rows in, {self.rows_accepted} accepted, "
            f"{self.rows_quarantined} quarantined {dict(sorted(reasons.items()))}; catalog {self.catalog_items} items"
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


def batch_id_for(day: date) -> str:
    """One batch per source and landing day: stable, so a re-run replaces its own batch row."""
    return f"{SOURCE}:{day.isoformat()}"


def _parse_lines(lines: list[str]) -> tuple[list[dict], list[tuple[int, str, str]]]:
    """Split raw lines into parsed records (with their line number) and unparseable ones."""
    parsed, rejected = [], []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            rejected.append((n, "malformed_json", line))
            continue
        if not isinstance(record, dict):
            rejected.append((n, "schema_mismatch", line))
            continue
        record["_line"] = n
        record["_raw"] = line
        parsed.append(record)
    return parsed, rejected


def _classify(frame: pd.DataFrame, interval_end: datetime, settings: Settings) -> pd.Series:
    """A reason code per row, or None for rows that are accepted. First failing rule wins."""
    reason = pd.Series(None, index=frame.index, dtype=object)

    def mark(mask: pd.Series, code: str) -> None:
        reason.loc[mask & reason.isna()] = code

    for column in ("event_id", "user_id", "item_id"):
        values = frame[column]
        mark(values.isna() | (values.astype(str).str.strip() == ""), f"missing_{column}")
    mark(~frame["event_type"].isin(EVENT_TYPES), "unknown_event_type")
    mark(frame["event_ts"].isna(), "bad_timestamp")
    latest_allowed = pd.Timestamp(interval_end) + pd.Timedelta(seconds=settings.future_tolerance_seconds)
    mark(frame["event_ts"] > latest_allowed, "future_timestamp")
    mark(frame.duplicated("event_id", keep="first") & frame["event_id"].notna(), "duplicate_event_id")

    # Bots: any user above the per-minute rate in this batch loses all its rows in the batch.
    candidates = frame[reason.isna()]
    per_minute = candidates.groupby([candidates["user_id"], candidates["event_ts"].dt.floor("min")]).size()
    bots = per_minute[per_minute > settings.bot_max_events_per_minute].index.get_level_values(0).unique()
    mark(frame["user_id"].isin(bots), "bot_suspected")
    return reason


def _read_batch(path: Path, interval_end: datetime, settings: Settings):
    lines = path.read_text(encoding="utf-8").splitlines()
    parsed, unparseable = _parse_lines(lines)
    frame = pd.DataFrame(parsed, columns=[*EVENT_COLUMNS, "_line", "_raw"])
    frame["event_ts"] = pd.to_datetime(frame["event_ts"], utc=True, errors="coerce", format="ISO8601")
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    frame["context"] = [json.dumps(c) if isinstance(c, dict) else None for c in frame["context"]]
    for column in ("event_id", "user_id", "item_id", "event_type", "session_id"):
        frame[column] = frame[column].astype("string")
    frame["reason"] = _classify(frame, interval_end, settings)
    n_input = sum(1 for line in lines if line.strip())
    return frame, unparseable, n_input


def ingest_interval(settings: Settings, interval_start: datetime, interval_end: datetime) -> IngestResult:
    """Ingest every landing file of [interval_start, interval_end), replacing what earlier runs wrote."""
    days = days_in_interval(interval_start, interval_end)
    files = [(d, landing_file_for(settings.landing_dir, datetime.combine(d, datetime.min.time()))) for d in days]
    missing = [str(p) for _, p in files if not p.exists()]
    if missing:
        raise IngestError(f"landing file(s) missing for interval {interval_start:%Y-%m-%d}: {', '.join(missing)}")

    results = []
    with connect(settings) as con:
        con.execute("begin transaction")
        try:
            catalog_items = _load_catalog(con, settings)
            for day, path in files:
                results.append(_ingest_file(con, settings, day, path, interval_start, interval_end))
            con.execute("commit")
        except Exception:
            con.execute("rollback")
            raise
    result = IngestResult(interval_start, interval_end, results, catalog_items)
    log.info(result.summary())
    return result


def _ingest_file(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    day: date,
    path: Path,
    interval_start: datetime,
    interval_end: datetime,
) -> BatchResult:
    started = datetime.now(UTC)
    batch_id = batch_id_for(day)
    relative = str(path.relative_to(settings.landing_dir))
    frame, unparseable, n_input = _read_batch(path, interval_end, settings)

    # An event id already accepted from another day's file is a cross-batch duplicate.
    con.register("incoming_ids", frame[["event_id"]].dropna())
    seen_elsewhere = {
        row[0]
        for row in con.execute(
            "select e.event_id from raw.events e join incoming_ids i using (event_id) where e.landing_date <> ?",
            [day],
        ).fetchall()
    }
    con.unregister("incoming_ids")
    frame.loc[frame["reason"].isna() & frame["event_id"].isin(seen_elsewhere), "reason"] = "duplicate_event_id"

    accepted = frame[frame["reason"].isna()].copy()
    accepted["source"] = SOURCE
    accepted["batch_id"] = batch_id
    accepted["landing_date"] = day
    accepted["ingested_at"] = started
    rejected = pd.DataFrame(
        [(n, reason, raw) for n, reason, raw in unparseable]
        + list(frame.loc[frame["reason"].notna(), ["_line", "reason", "_raw"]].itertuples(index=False)),
        columns=["line_number", "reason", "raw"],
    )
    if len(accepted) + len(rejected) != n_input:
        raise IngestError(f"{relative}: {n_input} rows in but {len(accepted)} accepted + {len(rejected)} quarantined")

    con.execute("delete from raw.events where landing_date = ?", [day])
    con.execute("delete from quarantine.events where landing_date = ?", [day])
    con.execute("delete from raw.batches where batch_id = ?", [batch_id])
    con.register("accepted_rows", accepted[[*EVENT_COLUMNS, "source", "batch_id", "landing_date", "ingested_at"]])
    con.execute("insert into raw.events select * from accepted_rows")
    con.unregister("accepted_rows")
    rejected.insert(0, "file", relative)
    rejected.insert(0, "landing_date", day)
    rejected.insert(0, "batch_id", batch_id)
    rejected["ingested_at"] = started
    con.register("rejected_rows", rejected)
    con.execute(
        "insert into quarantine.events (batch_id, landing_date, file, line_number, reason, raw, ingested_at) "
        "select batch_id, landing_date, file, line_number, reason, raw, ingested_at from rejected_rows"
    )
    con.unregister("rejected_rows")
    by_reason = dict(sorted(Counter(rejected["reason"]).items()))
    con.execute(
        "insert into raw.batches values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            batch_id,
            SOURCE,
            interval_start,
            interval_end,
            relative,
            n_input,
            len(accepted),
            len(rejected),
            json.dumps(by_reason),
            started,
            datetime.now(UTC),
        ],
    )
    result = BatchResult(batch_id, relative, n_input, len(accepted), len(rejected), by_reason)
    log.info("%s: %d in, %d accepted, %d quarantined %s", relative, n_input, len(accepted), len(rejected), by_reason)
    return result


def _load_catalog(con: duckdb.DuckDBPyConnection, settings: Settings) -> int:
    """Replace raw.items with the current catalog snapshot (it is small and always complete)."""
    path = catalog_file(settings.landing_dir)
    if not path.exists():
        raise IngestError(f"item catalog missing: {path}")
    items = pd.read_json(path, lines=True, dtype={"item_id": str})
    required = {"item_id", "category", "price", "in_stock", "is_blocked"}
    if missing := required - set(items.columns):
        raise IngestError(f"{path}: catalog lacks required column(s) {sorted(missing)}")
    items["created_at"] = pd.to_datetime(items.get("created_at"), utc=True, errors="coerce", format="ISO8601")
    items["attributes"] = [json.dumps(a) if isinstance(a, dict) else None for a in items.get("attributes", [])]
    for column in ("title",):
        if column not in items:
            items[column] = None
    con.execute("delete from raw.items")
    con.register(
        "catalog_rows",
        items[["item_id", "title", "category", "price", "in_stock", "is_blocked", "created_at", "attributes"]],
    )
    con.execute("insert into raw.items select * from catalog_rows")
    con.unregister("catalog_rows")
    return len(items)
