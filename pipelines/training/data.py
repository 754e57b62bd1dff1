"""Training's data: the event log and catalog read from the marts, and the folds cut from them.

Events come from ``marts.interaction_events`` (one row per accepted, deduplicated, non-bot event
with its signal weight) rather than ``marts.interactions_split`` because a rolling backtest needs
several cutoffs: each fold re-aggregates the events before its cutoff with the mart's weights and
the warehouse's exponential decay (``decay_half_life_days``, the setting dbt gets as a var) measured
from that cutoff. The newest fold is exactly the mart's split (tested in tests/training/test_evaluation.py).
The catalog comes from ``marts.item_features``. Nothing here reads staging or intermediate.

The event log is never a pandas frame: ``read_event_log`` streams the mart as Arrow record
batches and keeps only parallel numpy arrays (integer user and item codes, epoch seconds,
weights). Ids become codes in Arrow's C++ kernels (each batch dictionary-encoded, the batches'
dictionaries mapped once at the end: ``IdCoder``); Python sees each distinct id once, to put
them in ``id_order``, the order ``EventLog.from_frame`` uses too, so both readers give the same ``EventLog``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from models.columns import Columns
from models.dataset import Interactions
from models.evaluation import EventLog, Fold, global_time_folds, leave_last_n_fold, random_ratio_folds
from models.evaluation.splits import EVENT_TS, id_order
from pipelines.settings import Settings
from pipelines.warehouse.connection import RECORD_BATCH_ROWS, connect, read_frame

log = logging.getLogger(__name__)

EVENTS_RELATION = "marts.interaction_events"  # what training learns from: the source of its MLflow dataset


EVENTS_SQL = f"select user_id, item_id, event_ts, weight from {EVENTS_RELATION}"
ROWS_PER_BATCH = RECORD_BATCH_ROWS  # Arrow batches of the event log (a test makes them small)
SECONDS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


@dataclass
class EvaluationData:
    log: EventLog
    catalog: pd.DataFrame
    folds: list[Fold]
    split: str
    snapshot: str

    _full: Interactions | None = field(default=None, init=False, repr=False, compare=False)

    def full_interactions(self) -> Interactions:
        """Every event, decayed to the end of the log: what the model to be served is fitted on.

        Built once and kept: every candidate is asked whether it can fit it (``refusal``) before the
        winner is fitted on it, and at a million users each build was ~20 s of a daily training.
        Readers must not change it (models fit on copies of its matrix).
        """
        if self._full is None:
            self._full = self.log.interactions(np.ones(len(self.log), dtype=bool), self.log.end)[0]
        return self._full


def read_event_log(settings: Settings, catalog: pd.DataFrame | None = None) -> EventLog:
    """The events training and evaluation learn from, each with its signal weight (before decay).

    Streamed from ``EVENTS_RELATION`` in Arrow batches of ``ROWS_PER_BATCH`` rows; peak memory is
    about the arrays of the log, not a frame of its rows (see the module docstring).
    """
    users, items = IdCoder("user_id"), IdCoder("item_id")
    ts: list[np.ndarray] = []
    weight: list[np.ndarray] = []
    with connect(settings, must_exist=True) as warehouse:
        for batch in warehouse.record_batches(EVENTS_SQL, rows=ROWS_PER_BATCH):
            users.add(batch.column(Columns.User))
            items.add(batch.column(Columns.Item))
            ts.append(epoch_seconds(batch.column(EVENT_TS)))
            weight.append(batch.column(Columns.Weight).to_numpy(zero_copy_only=False).astype(np.float64))
    if not ts or not sum(map(len, ts)):
        raise ValueError(f"{EVENTS_RELATION} is empty: ingest and transform first")
    features = item_features(read_catalog(settings) if catalog is None else catalog)
    # One column at a time, its batches dropped as soon as it is whole: the log is never held twice.
    stamps, weights = joined(ts), joined(weight)
    user_ids, user_codes = users.codes()
    item_ids, item_codes = items.codes()
    return EventLog.from_codes(
        user_ids, item_ids, user_codes, item_codes, stamps, weights, settings.decay_half_life_days, features
    )


def joined(chunks: list[np.ndarray]) -> np.ndarray:
    """The chunks as one array; the list is emptied so that they can be freed."""
    whole = np.concatenate(chunks)
    chunks.clear()
    return whole


class IdCoder:
    """Integer codes for one id column arriving in Arrow batches, without a Python string per row.

    Each batch is dictionary-encoded on its own (its distinct ids, and each row's index into them);
    at the end the batches' dictionaries are put together once, their distinct ids (in first-seen
    order) ordered by ``id_order``, and every row's index mapped through. Looking each batch up among
    all ids seen so far instead rebuilt a hash table of every id for every batch: at 1M users that was
    a sixth of a daily training (benchmarks/README.md).
    """

    def __init__(self, column: str):
        self.column = column
        self.dictionaries: list = []  # per batch, its distinct ids (Arrow large_string)
        self.indices: list[np.ndarray] = []  # per batch, each row's index into its batch's dictionary

    def add(self, values) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        values = values.cast(pa.large_string())
        if values.null_count:
            raise ValueError(f"{EVENTS_RELATION} has events without {self.column}")
        encoded = pc.dictionary_encode(values)
        self.dictionaries.append(encoded.dictionary)
        self.indices.append(encoded.indices.to_numpy().astype(np.int64))

    def codes(self) -> tuple[np.ndarray, np.ndarray]:
        """(the distinct ids in ``id_order``, each event's code into them)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        every = pa.concat_arrays(self.dictionaries) if self.dictionaries else pa.array([], type=pa.large_string())
        distinct = pc.unique(every)
        first_seen = np.asarray(distinct.to_pylist(), dtype=object)
        ids = id_order(first_seen)
        rank = pd.Index(ids).get_indexer(first_seen).astype(np.int64)
        code_of_entry = rank[pc.index_in(every, value_set=distinct).to_numpy()]
        offsets = np.cumsum([0] + [len(d) for d in self.dictionaries[:-1]], dtype=np.int64)
        self.dictionaries = []
        coded = [code_of_entry[offset + index] for offset, index in zip(offsets, self.indices, strict=True)]
        self.indices = []
        return ids, joined(coded) if coded else np.empty(0, dtype=np.int64)


def epoch_seconds(stamps) -> np.ndarray:
    """Whole seconds since the epoch (UTC; floored, as ``EventLog.from_frame`` does) of an Arrow timestamp column."""
    import pyarrow as pa

    if stamps.null_count:
        raise ValueError(f"{EVENTS_RELATION} has events without event_ts")
    ticks = stamps.cast(pa.int64()).to_numpy()
    return np.floor_divide(ticks, SECONDS[stamps.type.unit]).astype(np.int64)


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
    """The event log, the catalog and the folds training and evaluation score on.

    A fold with more than ``eval_max_users`` test users is scored on a seeded uniform sample of them
    (``Fold.sample_users``; fold j draws with ``eval_sample_seed + j``): scoring is the part of
    evaluation that grows with users, and the sample's standard errors are reported beside the metrics.
    """
    catalog = read_catalog(settings)
    event_log = read_event_log(settings, catalog)
    folds, label = make_folds(event_log, settings)
    folds = [fold.sample_users(settings.eval_max_users, settings.eval_sample_seed + j) for j, fold in enumerate(folds)]
    for fold in folds:
        log.info("fold %s", fold.describe())
    snapshot = pd.Timestamp(event_log.end, unit="s", tz="UTC").isoformat()
    return EvaluationData(event_log, catalog, folds, label, snapshot)
