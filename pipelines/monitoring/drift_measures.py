"""The drift measures: the windows compared, each measure and its threshold, and the verdict.

Pure computation on two windows, no I/O: the check (``drift.py``) reads the windows and stores
the results, the report (``drift_report.py``) draws them; both import this module, neither the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd

from pipelines.settings import Settings

ACTIVITY_BINS = [1, 2, 3, 5, 9, 17, 33, 65, np.inf]  # events per user in the window: 1, 2, 3-4, 5-8, ...


def activity_bin_labels() -> list[str]:
    """'1', '2', '3-4', ..., '65+': the bins of ACTIVITY_BINS as a reader sees them."""
    labels = []
    for low, high in zip(ACTIVITY_BINS[:-1], ACTIVITY_BINS[1:], strict=True):
        labels.append(f"{low}+" if np.isinf(high) else str(low) if high - low == 1 else f"{low}-{high - 1}")
    return labels


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
