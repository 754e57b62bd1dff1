"""Train/test splits of an event log, each giving a ``Fold`` that evaluation scores the same way.

Three strategies:

- ``global_time_folds`` (the default, and the only one the promotion gate uses): one cutoff for
  everyone; training sees only events before it, the test window is the ``test_days`` after it. No
  user's training data contains anyone's future, which is how the model meets production. A
  rolling backtest is several such cutoffs, ``step_days`` apart, ending at the end of the log.
- ``leave_last_n_fold``: per user, the last ``n`` distinct items the user discovered are held out
  and training keeps only that user's events before them. Every user gets a test case, but one
  user's training may contain another user's future (popularity trends leak): use it for
  comparisons with the literature, not for promotion.
- ``random_ratio_folds``: a seeded random share of the (user, item) pairs is held out. Time is
  ignored altogether: optimistic, and only for sanity checks and literature comparisons.

In every fold an item counts for a user's test only if the user had not interacted with it in
training (the lists exclude seen items, so a re-interaction is unreachable), and held-out items the
model cannot know (first interacted after the cutoff) stay in the denominators: the model is not
credited for the part of the catalog it could not see.

Training weights are the signal weights of the events (the ``weight`` column of
``marts.interaction_events``: dbt applies the weights, once) with the warehouse's exponential time
decay, measured from the fold's own reference time (the cutoff), so no fold sees a later one. The
decay stays here rather than in a mart because a table can only decay to reference times it knows:
``marts.interactions`` decays to the snapshot and ``marts.interactions_split`` to its one split,
while a backtest has a cutoff per fold. The half-life is the same setting dbt gets as a var.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.columns import Columns
from models.dataset import ITEM_FEATURE_COLUMNS, Interactions, catalog_content

SECONDS_PER_DAY = 86_400
EVENT_TS = "event_ts"
GLOBAL_TIME = "global_time"  # the strategy of folds with one cutoff for everyone (``Fold.global_cutoff``)


def id_order(ids) -> np.ndarray:
    """Distinct ids in the order that gives their integer codes: sorted by code point (as UTF-8 bytes sort).

    The one place that decides it: every reader of an event log codes users and items by position
    here, so a frame and the warehouse's Arrow batches give identical ``EventLog`` arrays.
    """
    return np.asarray(sorted({str(i) for i in ids}), dtype=object)


@dataclass(frozen=True)
class EventLog:
    """Events as parallel arrays over integer codes; built once, sliced by every split.

    ``weight`` is each event's signal weight before time decay; ``ts`` is seconds since the epoch (UTC).
    ``item_features`` (optional, indexed by item id: category, price, created_at in epoch seconds,
    and the content columns title, description, attributes when the catalog has them) are static
    attributes handed to models that use them (never counts, which would leak the future); the
    whole catalog, including items without events, reaches content models as ``Interactions.catalog``.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    users: np.ndarray
    items: np.ndarray
    ts: np.ndarray
    weight: np.ndarray
    half_life_days: float
    item_features: pd.DataFrame | None = None

    @classmethod
    def from_codes(
        cls,
        user_ids: np.ndarray,
        item_ids: np.ndarray,
        users: np.ndarray,
        items: np.ndarray,
        ts: np.ndarray,
        weight: np.ndarray,
        half_life_days: float,
        item_features: pd.DataFrame | None = None,
    ) -> EventLog:
        """From events already coded against ``user_ids`` / ``item_ids`` in :func:`id_order`; every reader ends here.

        ``users`` and ``items`` index the id arrays, ``ts`` is epoch seconds (UTC), ``weight`` the signal weight.
        """
        if not len(ts):
            raise ValueError("event log is empty: nothing to split")
        if half_life_days <= 0:
            raise ValueError(f"decay half-life must be positive, got {half_life_days} days")
        lengths = {len(users), len(items), len(ts), len(weight)}
        if len(lengths) != 1:
            raise ValueError(f"event log arrays differ in length: {sorted(lengths)}")
        for name, ids in (("user", user_ids), ("item", item_ids)):
            ids = np.asarray(ids, dtype=object)
            if len(ids) > 1 and not (ids[1:] > ids[:-1]).all():
                raise ValueError(f"{name} ids must be unique and in id_order (sorted), or the codes differ by reader")
        return cls(
            user_ids=np.asarray(user_ids, dtype=object),
            item_ids=np.asarray(item_ids, dtype=object),
            users=np.asarray(users, dtype=np.int64),
            items=np.asarray(items, dtype=np.int64),
            ts=np.asarray(ts, dtype=np.int64),
            weight=np.asarray(weight, dtype=np.float64),
            half_life_days=float(half_life_days),
            item_features=item_features,
        )

    @classmethod
    def from_frame(
        cls, frame: pd.DataFrame, half_life_days: float, item_features: pd.DataFrame | None = None
    ) -> EventLog:
        """From rows of (user_id, item_id, event_ts, weight); event_ts a timestamp (naive = UTC).

        For callers that already hold a frame (benchmarks on public data sets, tests). Training reads
        the warehouse without one (``pipelines.training.data.read_event_log``); both code ids in
        :func:`id_order`, so the same events give the same ``EventLog``.
        """
        missing = {Columns.User, Columns.Item, EVENT_TS, Columns.Weight} - set(frame.columns)
        if missing:
            raise ValueError(f"event log lacks columns {sorted(missing)}")
        if frame.empty:
            raise ValueError("event log is empty: nothing to split")
        if frame[[Columns.User, Columns.Item, EVENT_TS]].isna().any().any():
            raise ValueError("event log has events without user_id, item_id or event_ts")
        user_column, item_column = frame[Columns.User].astype(str), frame[Columns.Item].astype(str)
        user_ids, item_ids = id_order(user_column.unique()), id_order(item_column.unique())
        stamps = pd.to_datetime(frame[EVENT_TS], utc=True)
        ts = (stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
        return cls.from_codes(
            user_ids,
            item_ids,
            pd.Index(user_ids).get_indexer(user_column),
            pd.Index(item_ids).get_indexer(item_column),
            ts.to_numpy(dtype=np.int64),
            frame[Columns.Weight].to_numpy(dtype=np.float64),
            half_life_days,
            item_features,
        )

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def end(self) -> int:
        return int(self.ts.max())

    @property
    def start(self) -> int:
        return int(self.ts.min())

    def item_first_seen(self) -> np.ndarray:
        """Per item code: the timestamp of its first event in the whole log."""
        first = np.full(len(self.item_ids), np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first, self.items, self.ts)
        return first

    def interactions(self, mask: np.ndarray, reference_ts: int) -> tuple[Interactions, np.ndarray, np.ndarray]:
        """Decayed (user x item) matrix of the masked events, over the users and items they contain.

        Also the last- and first-interaction time of each cell (epoch seconds, for time-aware models) and the
        static item features of the training items.
        Returns the interactions and, for the log's user and item codes, their row / column in it (-1 if absent).
        """
        users, items, ts = self.users[mask], self.items[mask], self.ts[mask]
        age_days = (reference_ts - ts) / SECONDS_PER_DAY
        weights = self.weight[mask] * np.exp2(-np.maximum(age_days, 0.0) / self.half_life_days)
        user_codes, rows = _present_codes(users, len(self.user_ids))
        item_codes, cols = _present_codes(items, len(self.item_ids))
        shape = (len(user_codes), len(item_codes))
        cells, cell_of_event = np.unique(rows * shape[1] + cols, return_inverse=True)
        cell_rows, cell_cols = cells // shape[1], cells % shape[1]
        summed = np.bincount(cell_of_event, weights=weights, minlength=len(cells))
        matrix = sp.csr_matrix((summed.astype(np.float32), (cell_rows, cell_cols)), shape=shape)
        latest = np.full(len(cells), np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(latest, cell_of_event, ts)
        last_ts = sp.csr_matrix((latest.astype(np.float64), (cell_rows, cell_cols)), shape=shape)
        earliest = np.full(len(cells), np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(earliest, cell_of_event, ts)
        first_ts = sp.csr_matrix((earliest.astype(np.float64), (cell_rows, cell_cols)), shape=shape)
        features = catalog = None
        if self.item_features is not None:
            static = [c for c in ITEM_FEATURE_COLUMNS if c in self.item_features.columns]
            features = self.item_features[static].reindex(self.item_ids[item_codes]).reset_index(drop=True)
            # No look-ahead: an item the catalog creates after the reference time does not exist yet.
            catalog = catalog_content(self.item_features, reference_ts)
        user_map = np.full(len(self.user_ids), -1, dtype=np.int64)
        user_map[user_codes] = np.arange(len(user_codes))
        item_map = np.full(len(self.item_ids), -1, dtype=np.int64)
        item_map[item_codes] = np.arange(len(item_codes))
        interactions = Interactions(
            self.user_ids[user_codes], self.item_ids[item_codes], matrix, last_ts, features, catalog, first_ts
        )
        return interactions, user_map, item_map


def _present_codes(codes: np.ndarray, n_codes: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(codes, return_inverse=True)`` for codes in [0, n_codes), by counting instead of sorting."""
    present = np.bincount(codes, minlength=n_codes) > 0
    position = np.cumsum(present) - 1
    return np.flatnonzero(present), position[codes]


@dataclass(frozen=True)
class Fold:
    """One train/test split, ready to score.

    ``relevant`` has one row per evaluated user (``eval_user_ids``; ``train_rows`` gives the row in
    ``train`` or -1 for a user with no training history) and one column per item: first the
    training items in ``train.item_ids`` order (so model item indices address it directly), then
    held-out items unknown to training (``n_unknown_items``, ids ``unknown_item_ids``). ``is_new`` marks training items
    first seen within ``new_item_days`` before ``reference_ts``; ``unknown_is_new`` marks the unknown
    items the catalog already listed at ``reference_ts``: new items nobody had touched yet, which a
    content model (``models/content.py``) can recommend and a purely collaborative one cannot.
    """

    name: str
    strategy: str
    train: Interactions
    relevant: sp.csr_matrix
    eval_user_ids: np.ndarray
    train_rows: np.ndarray
    reference_ts: int
    is_new: np.ndarray
    n_unknown_items: int
    # The ids of those held-out items, in column order after the training items (for explanations).
    unknown_item_ids: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))
    unknown_is_new: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    # When the fold scores a sample of its test users (``sample_users``): how many it had in all (0 = all scored).
    population_users: int = 0

    @property
    def global_cutoff(self) -> int | None:
        """The time every user's training stops at (epoch seconds) in a global-time fold; None in the others.

        Only such a fold says of an earlier fit whether it saw the test window: a fit whose data
        ended at or before this cutoff did not (a per-user or random split has no one such time).
        """
        return self.reference_ts if self.strategy.startswith(f"{GLOBAL_TIME}(") else None

    def sample_users(self, max_users: int, seed: int) -> Fold:
        """This fold scored on at most ``max_users`` of its test users, drawn uniformly with ``seed``.

        Metrics are means over users, so a uniform sample estimates them without bias; their standard
        error over the sampled users (``models.metrics.standard_errors``) says how far off the estimate
        may be. A fold with no more test users than ``max_users`` is returned as it is.
        """
        if max_users < 1:
            raise ValueError(f"a user sample needs at least one user, got {max_users}")
        if self.n_eval_users <= max_users:
            return self
        rows = np.sort(np.random.default_rng(seed).choice(self.n_eval_users, size=max_users, replace=False))
        return replace(
            self,
            relevant=self.relevant[rows],
            eval_user_ids=self.eval_user_ids[rows],
            train_rows=self.train_rows[rows],
            population_users=self.n_eval_users,
        )

    @property
    def new_columns(self) -> np.ndarray:
        """Per column of ``relevant``: whether the item counts as new (training items, then unknown ones)."""
        unknown = self.unknown_is_new if len(self.unknown_is_new) == self.n_unknown_items else None
        return np.concatenate([self.is_new, np.zeros(self.n_unknown_items, dtype=bool) if unknown is None else unknown])

    def columns_for(self, item_ids: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
        """``relevant`` and ``new_columns`` re-ordered to a model's item space: ``item_ids`` first, then the rest.

        A content model's items are the training items followed by catalog items nobody had touched
        (``models/content.py``); its item indices must address the held-out matrix as a collaborative
        model's do. Other models have exactly the training items and get the fold's own columns.
        """
        n_train, n_model = self.train.n_items, len(item_ids)
        if n_model == n_train:
            return self.relevant, self.new_columns
        if n_model < n_train or not np.array_equal(np.asarray(item_ids[:n_train]), self.train.item_ids):
            raise ValueError(
                f"the model's {n_model} items do not start with this fold's {n_train} training items: "
                "was it fitted on another fold?"
            )
        position = pd.Index(np.asarray(item_ids[n_train:], dtype=object)).get_indexer(self.unknown_item_ids)
        outside = position < 0
        column = np.arange(n_train + self.n_unknown_items)
        column[n_train:][~outside] = n_train + position[~outside]
        column[n_train:][outside] = n_model + np.arange(int(outside.sum()))
        coo = self.relevant.tocoo()
        width = n_model + int(outside.sum())
        relevant = sp.csr_matrix((coo.data, (coo.row, column[coo.col])), shape=(coo.shape[0], width))
        # A model's extra item nobody touched before the cutoff and the catalog listed: new by definition.
        marks = np.ones(width, dtype=bool)
        marks[column] = self.new_columns
        return relevant, marks

    def column_ids(self, item_ids: np.ndarray) -> np.ndarray:
        """The item id of each column of :meth:`columns_for`'s matrix for the same ``item_ids``."""
        extra = pd.Index(np.asarray(item_ids[self.train.n_items :], dtype=object))
        outside = ~pd.Index(self.unknown_item_ids).isin(extra)
        return np.concatenate([np.asarray(item_ids, dtype=object), self.unknown_item_ids[outside]])

    @property
    def n_eval_users(self) -> int:
        return len(self.eval_user_ids)

    def describe(self) -> str:
        sampled = f" (a seeded sample of {self.population_users})" if self.population_users else ""
        return (
            f"{self.name}: train {self.train.n_users} users x {self.train.n_items} items "
            f"({self.train.matrix.nnz} pairs), {self.n_eval_users} test users{sampled}, "
            f"{int(self.relevant.nnz)} held-out pairs ({self.n_unknown_items} items unknown at training)"
        )


def _make_fold(
    log: EventLog,
    name: str,
    strategy: str,
    train_mask: np.ndarray,
    test_users: np.ndarray,
    test_items: np.ndarray,
    reference_ts: int,
    new_item_days: float,
) -> Fold:
    """Assemble a fold from the training events and the held-out (user code, item code) pairs."""
    if not train_mask.any():
        raise ValueError(f"{name}: no training events before the split")
    train, user_map, item_map = log.interactions(train_mask, reference_ts)
    n_log_items = len(log.item_ids)
    pairs = np.unique(np.asarray(test_users, dtype=np.int64) * n_log_items + np.asarray(test_items, dtype=np.int64))
    pair_users, pair_items = pairs // n_log_items, pairs % n_log_items
    rows, cols = user_map[pair_users], item_map[pair_items]
    seen = np.zeros(len(pairs), dtype=bool)
    both = (rows >= 0) & (cols >= 0)
    if both.any():
        seen[both] = np.asarray(train.matrix[rows[both], cols[both]]).ravel() > 0
    pair_users, pair_items = pair_users[~seen], pair_items[~seen]
    if not len(pair_users):
        raise ValueError(f"{name}: no held-out interaction with an item the user had not seen in training")
    eval_codes, eval_rows = np.unique(pair_users, return_inverse=True)
    unknown_codes = np.unique(pair_items[item_map[pair_items] < 0])
    column = item_map.copy()
    column[unknown_codes] = train.n_items + np.arange(len(unknown_codes))
    relevant = sp.csr_matrix(
        (np.ones(len(pair_users), dtype=np.float32), (eval_rows, column[pair_items])),
        shape=(len(eval_codes), train.n_items + len(unknown_codes)),
    )
    first_seen = log.item_first_seen()[train_item_codes(item_map, train.n_items)]
    # An item first seen early in the log may be old, its history just predating the log: only an item
    # that had new_item_days without events in the log before its first one can be told to be new.
    window = new_item_days * SECONDS_PER_DAY
    is_new = first_seen >= max(reference_ts - window, log.start + window)
    return Fold(
        name=name,
        strategy=strategy,
        train=train,
        relevant=relevant,
        eval_user_ids=log.user_ids[eval_codes],
        train_rows=user_map[eval_codes],
        reference_ts=int(reference_ts),
        is_new=is_new,
        n_unknown_items=len(unknown_codes),
        unknown_item_ids=log.item_ids[unknown_codes],
        unknown_is_new=_listed_at(log, unknown_codes, reference_ts),
    )


def _listed_at(log: EventLog, item_codes: np.ndarray, reference_ts: int) -> np.ndarray:
    """Whether the catalog listed each item at ``reference_ts`` (False for all without a catalog)."""
    if log.item_features is None:
        return np.zeros(len(item_codes), dtype=bool)
    listed = catalog_content(log.item_features, reference_ts).index
    return np.asarray(pd.Index(log.item_ids[item_codes]).isin(listed), dtype=bool)


def train_item_codes(item_map: np.ndarray, n_items: int) -> np.ndarray:
    """The log's item code of each training item, in training order."""
    codes = np.empty(n_items, dtype=np.int64)
    present = np.flatnonzero(item_map >= 0)
    codes[item_map[present]] = present
    return codes


def rolling_cutoffs(log: EventLog, n_folds: int, test_days: float, step_days: float) -> list[int]:
    """Cutoffs, newest first: end - test_days, then ``step_days`` earlier each, as the warehouse's split does."""
    if n_folds < 1:
        raise ValueError(f"a backtest needs at least one fold, got {n_folds}")
    if test_days <= 0 or step_days <= 0:
        raise ValueError(f"test_days and step_days must be positive, got {test_days} and {step_days}")
    newest = log.end - int(test_days * SECONDS_PER_DAY)
    cutoffs = [newest - int(j * step_days * SECONDS_PER_DAY) for j in range(n_folds)]
    if cutoffs[-1] <= log.start:
        span = (log.end - log.start) / SECONDS_PER_DAY
        raise ValueError(
            f"the log spans {span:.1f} days: too short for {n_folds} folds of {test_days} test days "
            f"{step_days} days apart (the earliest fold would have no training data); "
            "lower backtest_folds or backtest_step_days"
        )
    return cutoffs


def cutoff_label(cutoff: int) -> str:
    """A cutoff (epoch seconds) as fold names and messages about it show it: UTC, to the minute."""
    return pd.Timestamp(cutoff, unit="s", tz="UTC").strftime("%Y-%m-%d %H:%M")


def global_time_folds(
    log: EventLog, n_folds: int, test_days: float, step_days: float, new_item_days: float
) -> list[Fold]:
    """Rolling global-cutoff folds, newest first: train = events before the cutoff, test = the next test_days."""
    folds = []
    for j, cutoff in enumerate(rolling_cutoffs(log, n_folds, test_days, step_days)):
        window = log.ts >= cutoff
        if j > 0:  # the newest window runs to the end of the log inclusive, like the warehouse's test split
            window &= log.ts < cutoff + int(test_days * SECONDS_PER_DAY)
        label = cutoff_label(cutoff)
        folds.append(
            _make_fold(
                log,
                f"cutoff {label}",
                f"{GLOBAL_TIME}(test_days={test_days:g})",
                log.ts < cutoff,
                log.users[window],
                log.items[window],
                cutoff,
                new_item_days,
            )
        )
    return folds


def leave_last_n_fold(log: EventLog, n: int, new_item_days: float) -> Fold:
    """Per user, the last n distinct items (by first interaction) are held out; training stops before them."""
    if n < 1:
        raise ValueError(f"leave-last-n needs n >= 1, got {n}")
    held_users, held_items, held_ts = _last_distinct_items(log, n)
    if held_users.size == 0:
        raise ValueError(f"leave-last-{n}: no user has more than {n} distinct items")
    user_start = np.full(len(log.user_ids), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(user_start, held_users, held_ts)
    train_mask = log.ts < user_start[log.users]
    return _make_fold(
        log,
        f"leave-last-{n}",
        f"leave_last_n(n={n})",
        train_mask,
        held_users,
        held_items,
        int(log.ts[train_mask].max()) if train_mask.any() else log.end,
        new_item_days,
    )


def _last_distinct_items(log: EventLog, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, item, first time) of each user's last `n` distinct items by first interaction, for users with
    more than `n`; ordered by user, then time, then item. Sorting codes, not a frame: a log of tens of
    millions of events fits this in a few arrays of its own length."""
    if len(log.users) == 0:
        return log.users[:0], log.items[:0], log.ts[:0]
    # One int64 key per (user, item) pair: a single stable sort groups the pairs, a reduceat takes each first time.
    pair = log.users.astype(np.int64) * len(log.item_ids) + log.items
    order = np.argsort(pair, kind="stable")
    pair = pair[order]
    starts = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]])
    first_ts = np.minimum.reduceat(log.ts[order], starts)
    pair = pair[starts]
    users, items = pair // len(log.item_ids), pair % len(log.item_ids)
    # Pairs are in (user, item) order, so a stable sort by (user, time) leaves equal times in item order.
    span = int(first_ts.max() - first_ts.min()) + 1
    order = np.argsort(users * span + (first_ts - first_ts.min()), kind="stable")
    users, items, ts = users[order], items[order], first_ts[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    sizes = np.diff(np.r_[starts, len(users)])
    size_of_row = np.repeat(sizes, sizes)
    from_end = np.repeat(starts + sizes, sizes) - 1 - np.arange(len(users))
    held = (from_end < n) & (size_of_row > n)
    return users[held], items[held], ts[held]


def user_last_n_fold(log: EventLog, user_id: str, n: int, new_item_days: float) -> Fold:
    """One user's last n distinct items (by first interaction) held out; everything else is training.

    For explaining one user's list when the backtest's own fold holds nothing out for them (no
    interaction in its test window, or no history before it): the user's training stops before the
    held-out items, every other user keeps the whole log, as in :func:`leave_last_n_fold` (so
    popularity trends of the held-out period are visible to the model: an explanation, not a score
    to promote on).
    """
    if n < 1:
        raise ValueError(f"holding out the last n items needs n >= 1, got {n}")
    code = np.flatnonzero(log.user_ids == user_id)
    if not len(code):
        raise ValueError(f"user {user_id!r} has no events in the log")
    mine = log.users == code[0]
    firsts = (
        pd.DataFrame({"i": log.items[mine], "ts": log.ts[mine]}).groupby("i", as_index=False)["ts"].min()
    ).sort_values(["ts", "i"])
    if len(firsts) <= n:
        raise ValueError(
            f"user {user_id!r} has {len(firsts)} distinct item(s): holding out the last {n} would leave no history"
        )
    held = firsts.iloc[-n:]
    train_mask = ~(mine & (log.ts >= held["ts"].min()))
    return _make_fold(
        log,
        f"{user_id}: last {n}",
        f"user_last_n(n={n})",
        train_mask,
        np.full(len(held), code[0]),
        held["i"].to_numpy(),
        int(log.ts[train_mask].max()),
        new_item_days,
    )


def random_ratio_folds(log: EventLog, ratio: float, n_folds: int, seed: int, new_item_days: float) -> list[Fold]:
    """n_folds seeded random splits of the (user, item) pairs, `ratio` of them held out in each."""
    if not 0 < ratio < 1:
        raise ValueError(f"random split ratio must be in (0, 1), got {ratio}")
    pair_code = log.users * len(log.item_ids) + log.items
    unique_pairs, pair_of_event = np.unique(pair_code, return_inverse=True)
    folds = []
    for j in range(n_folds):
        held = np.random.default_rng(seed + j).random(len(unique_pairs)) < ratio
        test_pairs = unique_pairs[held]
        folds.append(
            _make_fold(
                log,
                f"random seed {seed + j}",
                f"random_ratio(ratio={ratio:g})",
                ~held[pair_of_event],
                test_pairs // len(log.item_ids),
                test_pairs % len(log.item_ids),
                log.end,
                new_item_days,
            )
        )
    return folds
