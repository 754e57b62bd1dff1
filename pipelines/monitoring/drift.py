"""Measure drift between the latest window of events and a stored baseline.

Why these measures: a recommender goes stale when what people do changes (event-type mix),
what they do it to changes (item popularity, new items), or who does it changes (user
activity, new users). Each is compared with the window the current model was trained on:
Jensen-Shannon divergence (base 2, in [0, 1]) for the two categorical distributions, PSI for
the binned activity distribution, plain shares for newcomers. Thresholds live in settings.

When any measure crosses its threshold (or there is no baseline yet, so no model has seen
the data), the check says "retrain": the DAG then emits the DRIFT asset that schedules
training, and the current window becomes the new baseline. Every check is stored in
``monitoring.drift_results`` and written as an HTML report under reports/drift/.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from pipelines.contract import EVENT_TYPES
from pipelines.monitoring.drift_measures import DriftResult, Window, compare
from pipelines.monitoring.drift_report import write_drift_report
from pipelines.reports.index import write_index
from pipelines.settings import Settings
from pipelines.warehouse.connection import connect

log = logging.getLogger(__name__)


def load_window(settings: Settings, end: datetime | None = None) -> Window:
    """The last `drift_window_days` of the events training learns from, ending at `end` (default: the newest).

    Read from ``marts.interaction_events``, so bots dbt filters out move neither drift nor training.
    """
    with connect(settings, must_exist=True) as con:
        if end is None:
            newest = con.execute("select max(event_ts) from marts.interaction_events").fetchone()[0]
            if newest is None:
                raise ValueError("no events in the warehouse: nothing to check for drift")
            end = pd.Timestamp(newest).tz_localize("UTC").to_pydatetime() + timedelta(microseconds=1)
        start = end - timedelta(days=settings.drift_window_days)
        frame = con.execute(
            "select user_id, item_id, event_type from marts.interaction_events where event_ts >= ? and event_ts < ?",
            [start.replace(tzinfo=None), end.replace(tzinfo=None)],
        ).fetch_df()
    types = frame["event_type"].value_counts().reindex(list(EVENT_TYPES), fill_value=0)
    return Window(
        start=start,
        end=end,
        event_types=types / max(types.sum(), 1),
        items=frame["item_id"].value_counts(),
        users=frame["user_id"].value_counts(),
    )


def _store_baseline(con, window: Window) -> None:
    con.execute("delete from monitoring.drift_baseline")
    rows = [("event_type", k, float(v)) for k, v in window.event_types.items()]
    rows += [("item", str(k), float(v)) for k, v in window.items.items()]
    rows += [("user", str(k), float(v)) for k, v in window.users.items()]
    frame = pd.DataFrame(rows, columns=["kind", "key", "value"])
    frame.insert(0, "window_end", window.end)
    frame.insert(0, "window_start", window.start)
    con.append_frame("monitoring.drift_baseline", frame)


def _load_baseline(con) -> Window | None:
    frame = con.execute("select window_start, window_end, kind, key, value from monitoring.drift_baseline").fetch_df()
    if frame.empty:
        return None

    def series(kind: str) -> pd.Series:
        part = frame[frame["kind"] == kind]
        return pd.Series(part["value"].to_numpy(), index=part["key"].to_numpy())

    return Window(
        start=pd.Timestamp(frame["window_start"].iloc[0]).to_pydatetime(),
        end=pd.Timestamp(frame["window_end"].iloc[0]).to_pydatetime(),
        event_types=series("event_type").reindex(list(EVENT_TYPES), fill_value=0.0),
        items=series("item"),
        users=series("user"),
    )


def check_drift(settings: Settings, end: datetime | None = None) -> DriftResult:
    """Compare the latest window with the baseline; store the result; move the baseline if retraining."""

    current = load_window(settings, end)
    with connect(settings) as con:
        baseline = _load_baseline(con)
    result = DriftResult(
        checked_at=datetime.now(UTC),
        window_start=current.start,
        window_end=current.end,
        baseline_start=baseline.start if baseline else None,
        baseline_end=baseline.end if baseline else None,
        measures=compare(baseline, current, settings) if baseline else [],
    )
    result.report = str(write_drift_report(settings, result, baseline, current))
    # Stored relative to reports/, so a copied or moved home still finds (and links) it.
    stored_report = Path(result.report).relative_to(settings.reports_dir).as_posix()
    with connect(settings) as con, con.transaction():
        rows = [
            (
                result.checked_at, result.window_start, result.window_end, result.baseline_start,
                result.baseline_end, m.name, m.method, m.value, m.threshold, m.drifted, result.retrain,
                stored_report,
            )
            for m in result.measures
        ] or [
            (
                result.checked_at, result.window_start, result.window_end, None, None, "baseline", "none",
                None, None, False, True, stored_report,
            )
        ]  # fmt: skip
        con.executemany("insert into monitoring.drift_results values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        if result.retrain:
            _store_baseline(con, current)
    write_index(settings)
    log.info(result.summary())
    return result


def result_as_metadata(result: DriftResult) -> dict:
    """What the DRIFT asset event carries, so the training run can say why it ran."""
    return {
        "reason": result.reason,
        "window_end": result.window_end.isoformat(),
        "measures": json.dumps({m.name: round(m.value, 4) for m in result.measures}),
    }
