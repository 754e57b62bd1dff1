"""Training's data: the event log and catalog read from the marts, and the folds cut from them.

Events come from ``marts.interaction_events`` (one row per accepted, deduplicated, non-bot event
with its signal weight) rather than ``marts.interactions_split`` because a rolling backtest needs
several cutoffs: each fold re-aggregates the events before its cutoff with the mart's weights and
the warehouse's exponential decay (``decay_half_life_days``, the setting dbt gets as a var) measured
from that cutoff. The newest fold is exactly the mart's split (tested in tests/training/test_evaluation.py).
The catalog comes from ``marts.item_features``. Nothing here reads staging or intermediate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.columns import Columns
from models.dataset import Interactions
from models.evaluation import EventLog, Fold, global_time_folds, leave_last_n_fold, random_ratio_folds
from models.evaluation.splits import EVENT_TS
from pipelines.settings import Settings
from pipelines.warehouse.connection import read_frame

log = logging.getLogger(__name__)

EVENTS_RELATION = "marts.interaction_events"  # what training learns from: the source of its MLflow dataset


@dataclass
class EvaluationData:
    log: EventLog
    catalog: pd.DataFrame
    folds: list[Fold]
    split: str
    snapshot: str

    def events_frame(self) -> pd.DataFrame:
        """The event log as read from ``EVENTS_RELATION`` (user, item, event time, weight): training's data set."""
        return pd.DataFrame(
            {
                Columns.User: self.log.user_ids[self.log.users],
                Columns.Item: self.log.item_ids[self.log.items],
                EVENT_TS: pd.to_datetime(self.log.ts, unit="s", utc=True),
                Columns.Weight: self.log.weight,
            }
        )

    def full_interactions(self) -> Interactions:
        """Every event, decayed to the end of the log: what the model to be served is fitted on."""
        return self.log.interactions(np.ones(len(self.log), dtype=bool), self.log.end)[0]


def read_event_log(settings: Settings, catalog: pd.DataFrame | None = None) -> EventLog:
    """The events training and evaluation learn from, each with its signal weight (before decay)."""
    frame = read_frame(settings, f"select user_id, item_id, event_ts, weight from {EVENTS_RELATION}")
    if frame.empty:
        raise ValueError(f"{EVENTS_RELATION} is empty: ingest and transform first")
    return EventLog.from_frame(
        frame, settings.decay_half_life_days, item_features(read_catalog(settings) if catalog is None else catalog)
    )


def read_catalog(settings: Settings) -> pd.DataFrame:
    """The catalog's items (not items seen only in events) with what the list rules and models use."""
    return read_frame(
        settings,
        "select item_id, title, description, attributes, category, seller, price, created_at, in_stock, is_blocked "
        "from marts.item_features where in_catalog",
    )


def item_features(catalog: pd.DataFrame) -> pd.DataFrame:
    """Static item attributes and content for models that use them, indexed by item id; created_at in epoch seconds."""
    columns = [c for c in ("category", "price", "created_at", "title", "description", "attributes") if c in catalog]
    features = catalog.set_index("item_id")[columns].copy()
    stamps = pd.to_datetime(features["created_at"], utc=True)
    features["created_at"] = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    return features


def make_folds(log: EventLog, settings: Settings) -> tuple[list[Fold], str]:
    """The folds the settings ask for, and a label of the split for tags and reports."""
    days = settings.eval_new_item_days
    if settings.eval_split == "global_time":
        step = settings.backtest_step_days or settings.test_days
        folds = global_time_folds(log, settings.backtest_folds, settings.test_days, step, days)
        label = f"global_time:test_days={settings.test_days},folds={settings.backtest_folds},step_days={step:g}"
    elif settings.eval_split == "leave_last_n":
        folds = [leave_last_n_fold(log, settings.eval_leave_last_n, days)]
        label = f"leave_last_n:n={settings.eval_leave_last_n}"
    else:
        folds = random_ratio_folds(
            log, settings.eval_random_ratio, settings.backtest_folds, settings.train_random_state, days
        )
        label = f"random_ratio:ratio={settings.eval_random_ratio:g},folds={settings.backtest_folds}"
    return folds, label


def load_evaluation_data(settings: Settings) -> EvaluationData:
    catalog = read_catalog(settings)
    event_log = read_event_log(settings, catalog)
    folds, label = make_folds(event_log, settings)
    for fold in folds:
        log.info("fold %s", fold.describe())
    snapshot = pd.Timestamp(event_log.end, unit="s", tz="UTC").isoformat()
    return EvaluationData(event_log, catalog, folds, label, snapshot)
