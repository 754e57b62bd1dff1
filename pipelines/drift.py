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
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from pipelines.contract import EVENT_TYPES
from pipelines.settings import Settings
from pipelines.warehouse import connect

log = logging.getLogger(__name__)

ACTIVITY_BINS = [1, 2, 3, 5, 9, 17, 33, 65, np.inf]  # events per user in the window: 1, 2, 3-4, 5-8, ...


@dataclass
class Window:
    start: datetime
    end: datetime
    event_types: pd.Series  # share per event type
    items: pd.Series  # event count per item
    users: pd.Series  # event count per user

    @property
    def activity(self) -> np.ndarray:
        counts, _ = np.histogram(self.users.to_numpy(), bins=ACTIVITY_BINS)
        return counts / max(counts.sum(), 1)


@dataclass
class Measure:
    name: str
    method: str
    value: float
    threshold: float

    def __post_init__(self) -> None:
        self.value = float(self.value)  # numpy scalars do not bind as DuckDB parameters

    @property
    def drifted(self) -> bool:
        return bool(self.value > self.threshold)


@dataclass
class DriftResult:
    checked_at: datetime
    window_start: datetime
    window_end: datetime
    baseline_start: datetime | None
    baseline_end: datetime | None
    measures: list[Measure] = field(default_factory=list)
    report: str | None = None

    @property
    def has_baseline(self) -> bool:
        return self.baseline_start is not None

    @property
    def retrain(self) -> bool:
        return not self.has_baseline or any(m.drifted for m in self.measures)

    @property
    def reason(self) -> str:
        if not self.has_baseline:
            return "no baseline yet: the current window becomes the baseline and a first model is trained"
        drifted = [f"{m.name} {m.value:.3f} > {m.threshold}" for m in self.measures if m.drifted]
        return "drift: " + ", ".join(drifted) if drifted else "no measure above its threshold"

    def summary(self) -> str:
        values = ", ".join(f"{m.name}={m.value:.3f}" for m in self.measures) or "no measures"
        return (
            f"drift check of [{self.window_start:%Y-%m-%d %H:%M}, {self.window_end:%Y-%m-%d %H:%M}): {values}; "
            f"{'retrain' if self.retrain else 'no retraining'} ({self.reason})"
        )


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits (0 = identical, 1 = disjoint)."""
    p = p / p.sum() if p.sum() else p
    q = q / q.sum() if q.sum() else q
    m = (p + q) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / b[mask])))

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def psi(expected: np.ndarray, actual: np.ndarray, floor: float = 1e-4) -> float:
    """Population stability index over matching bins (floored so an empty bin is not infinite)."""
    e = np.maximum(expected, floor)
    a = np.maximum(actual, floor)
    return float(np.sum((a - e) * np.log(a / e)))


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


def compare(baseline: Window, current: Window, settings: Settings) -> list[Measure]:
    items = baseline.items.index.union(current.items.index)
    new_items = current.items[~current.items.index.isin(baseline.items.index)].sum()
    new_users = current.users[~current.users.index.isin(baseline.users.index)].sum()
    total = max(current.items.sum(), 1)
    return [
        Measure(
            "event_type_mix",
            "jensen_shannon",
            js_divergence(baseline.event_types.to_numpy(), current.event_types.to_numpy()),
            settings.drift_max_event_type_js,
        ),
        Measure(
            "item_popularity",
            "jensen_shannon",
            js_divergence(
                baseline.items.reindex(items, fill_value=0).to_numpy(float),
                current.items.reindex(items, fill_value=0).to_numpy(float),
            ),
            settings.drift_max_item_popularity_js,
        ),
        Measure("user_activity", "psi", psi(baseline.activity, current.activity), settings.drift_max_user_activity_psi),
        Measure("new_item_share", "share_of_events", new_items / total, settings.drift_max_new_item_share),
        Measure("new_user_share", "share_of_events", new_users / total, settings.drift_max_new_user_share),
    ]


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
    from pipelines.drift_report import write_drift_report
    from pipelines.reports import write_index

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
    with connect(settings) as con, con.transaction():
        rows = [
            (
                result.checked_at, result.window_start, result.window_end, result.baseline_start,
                result.baseline_end, m.name, m.method, m.value, m.threshold, m.drifted, result.retrain,
                result.report,
            )
            for m in result.measures
        ] or [
            (
                result.checked_at, result.window_start, result.window_end, None, None, "baseline", "none",
                None, None, False, True, result.report,
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
