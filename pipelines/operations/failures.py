"""Serving's failure log read back: failed answers and fallbacks counted by reason, per day and per week.

The record format, the reasons and the file names are serving's (``serving.failures``), imported
here, never respelled. The log is bounded and rotates, so it only reaches back as far as its files
hold; the health check therefore keeps the counts per day in ``monitoring.failed_requests``
(``record_failure_counts``) and the weekly report reads those merged with what the log holds now
(``weekly_failures``). A day's count only ever grows: a stored day whose oldest records have since
rotated out keeps the larger count it had.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from pipelines.settings import Settings
from serving.config import ServingSettings, load_settings
from serving.failures import FIELDS, Reason, log_files

log = logging.getLogger(__name__)

COUNT_COLUMNS = ["day", "reason", "status", "answers"]


def failure_log_dir(settings: Settings) -> Path:
    """Where serving writes its failure log for this home (RECFORGE_FAILURE_LOG_DIR, as serving reads it)."""
    return load_settings(ServingSettings, home=settings.home).failure_log_path


@dataclass
class FailureLogRead:
    records: pd.DataFrame  # one row per record, columns FIELDS; `time` a UTC timestamp
    unreadable_lines: int  # lines that are not a record (a line cut by a crash): skipped, counted
    files: list[Path]


def read_failures(directory: Path) -> FailureLogRead:
    """Every record of the log's files, oldest first."""
    rows, unreadable, files = [], 0, log_files(directory) if directory.is_dir() else []
    reasons = {reason.value for reason in Reason}
    for path in files:
        with path.open("rb") as lines:
            for line in lines:
                try:
                    record = json.loads(line)
                    valid = isinstance(record, dict) and record.get("reason") in reasons and "time" in record
                except ValueError:
                    valid = False
                if valid:
                    rows.append(record)
                else:
                    unreadable += 1
    frame = pd.DataFrame(rows, columns=list(FIELDS))
    frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601")
    if unreadable:
        log.warning("failure log %s: %d unreadable line(s) skipped", directory, unreadable)
    return FailureLogRead(frame, unreadable, files)


def daily_counts(records: pd.DataFrame) -> pd.DataFrame:
    """Answers per UTC day, reason and status."""
    if records.empty:
        return pd.DataFrame(columns=COUNT_COLUMNS)
    counted = records.assign(day=records["time"].dt.date).groupby(["day", "reason", "status"]).size()
    return counted.rename("answers").reset_index()[COUNT_COLUMNS]


def _merged(stored: pd.DataFrame, live: pd.DataFrame) -> pd.DataFrame:
    """Per (day, reason, status) the larger of the stored and the live count."""
    frames = [frame for frame in (stored, live) if not frame.empty]
    if not frames:
        return pd.DataFrame(columns=COUNT_COLUMNS)
    both = pd.concat(frames)
    both = both.assign(day=pd.to_datetime(both["day"]).dt.date, status=both["status"].astype(int))
    return both.groupby(["day", "reason", "status"], as_index=False)["answers"].max()[COUNT_COLUMNS]


def stored_counts(con) -> pd.DataFrame:
    return con.execute(f"select {', '.join(COUNT_COLUMNS)} from monitoring.failed_requests").fetch_df()


def record_failure_counts(settings: Settings) -> pd.DataFrame:
    """Store the log's counts per day in monitoring.failed_requests (never lowering a stored count); return them."""
    from pipelines.warehouse.connection import connect

    live = daily_counts(read_failures(failure_log_dir(settings)).records)
    if live.empty:
        return live
    with connect(settings) as con, con.transaction():
        stored = stored_counts(con)
        stored = stored[pd.to_datetime(stored["day"]).dt.date.isin(set(live["day"]))] if not stored.empty else stored
        merged = _merged(stored, live)
        for day in sorted(set(merged["day"])):
            con.execute("delete from monitoring.failed_requests where day = ?", [day])
        now = datetime.now(UTC)
        con.executemany(
            "insert into monitoring.failed_requests (day, reason, status, answers, recorded_at) values (?, ?, ?, ?, ?)",
            [[row.day, row.reason, int(row.status), int(row.answers), now] for row in merged.itertuples()],
        )
    log.info(
        "failure log: %d answer(s) over %d day(s) recorded by reason", merged["answers"].sum(), merged["day"].nunique()
    )
    return merged


def weekly_failures(settings: Settings, con=None) -> pd.DataFrame:
    """Answers per week (its Monday, YYYY-MM-DD) x reason: the stored counts merged with the live log."""
    stored = stored_counts(con) if con is not None else pd.DataFrame(columns=COUNT_COLUMNS)
    counts = _merged(stored, daily_counts(read_failures(failure_log_dir(settings)).records))
    if counts.empty:
        return pd.DataFrame()
    days = pd.to_datetime(counts["day"])
    weeks = (days - pd.to_timedelta(days.dt.weekday, unit="D")).dt.strftime("%Y-%m-%d")
    table = counts.assign(week=weeks).pivot_table(index="week", columns="reason", values="answers", aggfunc="sum")
    order = [reason.value for reason in Reason if reason.value in table.columns]
    return table[order].fillna(0).astype(int).sort_index()
