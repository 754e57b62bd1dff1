"""Features of (user, candidate item) pairs for the two-stage ranker, computed as of a cutoff.

Everything here is derived from the Interactions the ranker is given (and static item
attributes), never from the marts' whole-log aggregates: at training time the "now" is the
label cutoff, so a feature such as "events in the last 7 days" must count the 7 days *before*
that cutoff. Using ``marts.item_features.events_7d`` would count the label window itself and
teach the ranker a signal it will not have at serving time.

Feature groups (names in ``FeatureContext.columns``):
- item popularity: distinct users all-time and in the last ``window_days``, their ratio (trend);
- item trend: distinct users in the last 1 and 3 days (``TREND_DAYS``) and the item's share of
  all users of that span, so a burst right before the cutoff is visible;
- item recency: days since the item's last interaction, since its first interaction in the data,
  and since it was created (``created_at`` if known, else the first interaction);
- user activity: distinct items, segment (0 cold < 5, 1 casual 5-50, 2 power > 50 — the
  thresholds of ``marts.user_features``), days since the user's last interaction, mean
  popularity of the user's items (how mainstream the user is);
- user-category affinity: share of the user's items in the candidate's category, and the
  category's share of recent activity (needs ``category``); the user's taste for the category
  counted in visits (distinct hours in which the user first met an item of it), smoothed by
  ``TASTE_PRIOR``: a user who browses a category in three sittings likes it more than one who
  met three of its items in one (``category_taste``, used with the generators' scores by the ranker);
- price: the item's price, the user's mean price and their ratio (needs ``price``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.columns import Columns
from models.dataset import Interactions
from models.evaluation.segments import SegmentBounds

SECONDS_PER_DAY = 86_400.0
# Short spans for the item's trend as of the cutoff: recent popularity wins on MovieLens because the
# last days' burst matters, and one ``window_days`` count cannot tell a burst from a steady item.
TREND_DAYS = (1.0, 3.0)
# A visit to a category: the hours in which the user first met an item of it (a sitting, from per-cell times).
VISIT_SECONDS = 3_600.0
# Pseudo-visits added to every category before the user's taste is read off the counts (a flat prior):
# a category never visited keeps a small, non-zero share, and a short history is not taken at its word.
TASTE_PRIOR = 0.5
# Activity segments by distinct items, as marts.user_features defines them.


@dataclass
class FeatureContext:
    """Per-item and per-user statistics as of ``now``; item x user pairs are looked up from these."""

    now: float
    item_users: np.ndarray
    item_recent_users: np.ndarray
    item_days_since_last: np.ndarray
    item_age_days: np.ndarray
    item_days_since_first: np.ndarray
    user_items: np.ndarray
    user_days_since_last: np.ndarray
    user_mean_popularity: np.ndarray
    item_category: np.ndarray | None = None  # integer codes, -1 unknown
    user_category_share: sp.csr_matrix | None = None  # users x categories
    category_recent_share: np.ndarray | None = None
    item_price: np.ndarray | None = None
    user_mean_price: np.ndarray | None = None
    # Distinct users in the last TREND_DAYS[i] days before now, one row per span (None in models saved
    # before these features existed: they are then simply not columns).
    item_trend_users: np.ndarray | None = None
    # users x categories: visits (see VISIT_SECONDS), None without categories or in older models.
    user_category_visits: sp.csr_matrix | None = None

    @classmethod
    def as_of(cls, interactions: Interactions, window_days: float, item_category: np.ndarray | None) -> FeatureContext:
        """Statistics of ``interactions``; its latest timestamp is 'now'.

        ``item_category`` holds integer codes fixed by the caller, so training and serving
        contexts agree on what code 3 means.
        """
        last_ts = interactions.require_time()
        now = interactions.max_ts
        binary = (interactions.matrix > 0).astype(np.float32).tocsr()
        item_users = np.asarray(binary.sum(axis=0)).ravel()
        recent = last_ts.copy()
        recent.data = (recent.data > now - window_days * SECONDS_PER_DAY).astype(np.float32)
        item_recent_users = np.asarray(recent.sum(axis=0)).ravel()
        item_last = _column_reduce(last_ts, np.maximum)
        item_first = _column_reduce(last_ts, np.minimum)
        created = interactions.item_feature(Columns.CreatedAt)
        if created is not None:
            created = np.where(np.isnan(created.astype(np.float64)), item_first, created.astype(np.float64))
        else:
            created = item_first
        user_items = np.asarray(binary.sum(axis=1)).ravel()
        user_last = np.asarray(last_ts.max(axis=1).toarray()).ravel()
        with np.errstate(invalid="ignore", divide="ignore"):
            user_mean_pop = np.asarray(binary @ item_users).ravel() / user_items
        context = cls(
            now=now,
            item_users=item_users,
            item_recent_users=item_recent_users,
            item_days_since_last=_days(now - item_last),
            item_age_days=_days(now - created),
            item_days_since_first=_days(now - item_first),
            user_items=user_items,
            user_days_since_last=np.where(user_items > 0, _days(now - user_last), np.nan),
            user_mean_popularity=user_mean_pop,
            item_trend_users=np.vstack([_users_since(last_ts, now - d * SECONDS_PER_DAY) for d in TREND_DAYS]),
        )
        if item_category is not None:
            n_cat = max(int(item_category.max(initial=-1)) + 1, 1)
            to_category = category_indicator(item_category, n_cat)
            counts = (binary @ to_category).tocsr()
            with np.errstate(invalid="ignore", divide="ignore"):
                share = sp.diags(1.0 / np.maximum(user_items, 1)).astype(np.float32) @ counts
            recent_by_category = np.asarray(recent.sum(axis=0)).ravel() @ to_category
            context.item_category = item_category
            context.user_category_share = share.tocsr()
            context.user_category_visits = _category_visits(interactions, item_category, n_cat)
            context.category_recent_share = recent_by_category / max(recent_by_category.sum(), 1.0)
        price = interactions.item_feature(Columns.Price)
        if price is not None:
            price = price.astype(np.float64)
            priced = np.where(np.isnan(price), 0.0, price)
            has_price = (~np.isnan(price)).astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                context.user_mean_price = np.asarray(binary @ priced).ravel() / np.asarray(binary @ has_price).ravel()
            context.item_price = price
        return context

    @property
    def columns(self) -> list[str]:
        names = [
            "item_users",
            "item_recent_users",
            "item_trend",
            "item_days_since_last",
            "item_age_days",
            "item_days_since_first",
            "user_items",
            "user_segment",
            "user_days_since_last",
            "user_mean_popularity",
            "item_vs_user_popularity",
        ]
        if self.item_trend_users is not None:
            names += [f"item_users_{d:g}d" for d in TREND_DAYS] + [f"item_share_{d:g}d" for d in TREND_DAYS]
        if self.item_category is not None:
            names += ["user_category_share", "category_recent_share"]
        if self.item_price is not None:
            names += ["item_price", "user_mean_price", "price_vs_user_mean"]
        return names

    def pair_features(self, users: np.ndarray, items: np.ndarray) -> dict[str, np.ndarray]:
        """Feature columns for aligned arrays of user and item indices."""
        item_users = self.item_users[items]
        user_items = self.user_items[users]
        with np.errstate(invalid="ignore", divide="ignore"):
            features = {
                "item_users": item_users,
                "item_recent_users": self.item_recent_users[items],
                "item_trend": self.item_recent_users[items] / np.maximum(item_users, 1.0),
                "item_days_since_last": self.item_days_since_last[items],
                "item_age_days": self.item_age_days[items],
                "item_days_since_first": self.item_days_since_first[items],
                "user_items": user_items,
                "user_segment": segment_of(user_items).astype(np.float64),
                "user_days_since_last": self.user_days_since_last[users],
                "user_mean_popularity": self.user_mean_popularity[users],
                "item_vs_user_popularity": item_users / self.user_mean_popularity[users],
            }
            if self.item_trend_users is not None:
                for span, counts in zip(TREND_DAYS, self.item_trend_users, strict=True):
                    features[f"item_users_{span:g}d"] = counts[items]
                    # The item's share of all users active in the span: comparable across cutoffs.
                    features[f"item_share_{span:g}d"] = counts[items] / max(float(counts.sum()), 1.0)
            if self.item_category is not None:
                category = self.item_category[items]
                known = category >= 0
                share = np.full(len(users), np.nan)
                share[known] = np.asarray(self.user_category_share[users[known], category[known]]).ravel()
                recent_share = np.full(len(users), np.nan)
                recent_share[known] = self.category_recent_share[category[known]]
                features["user_category_share"] = share
                features["category_recent_share"] = recent_share
            if self.item_price is not None:
                features["item_price"] = self.item_price[items]
                features["user_mean_price"] = self.user_mean_price[users]
                features["price_vs_user_mean"] = self.item_price[items] / self.user_mean_price[users]
        return features

    # --- persistence as plain arrays (prefix keeps them apart from the model's own arrays)
    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        arrays = {}
        for name, value in vars(self).items():
            if value is None:
                continue
            if sp.issparse(value):
                arrays |= {f"{prefix}{name}__{part}": getattr(value, part) for part in ("data", "indices", "indptr")}
                arrays[f"{prefix}{name}__shape"] = np.asarray(value.shape)
            else:
                arrays[f"{prefix}{name}"] = np.asarray(value)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str) -> FeatureContext:
        values = {}
        for name in cls.__dataclass_fields__:
            if f"{prefix}{name}" in arrays:
                value = arrays[f"{prefix}{name}"]
                values[name] = float(value) if name == "now" else value
            elif f"{prefix}{name}__data" in arrays:
                parts = [arrays[f"{prefix}{name}__{part}"] for part in ("data", "indices", "indptr")]
                values[name] = sp.csr_matrix(tuple(parts), shape=tuple(arrays[f"{prefix}{name}__shape"]))
        return cls(**values)


def category_indicator(item_category: np.ndarray, n_categories: int) -> sp.csr_matrix:
    """items x categories, 1 where the item belongs to the category (items of unknown category, -1, have none)."""
    known = item_category >= 0
    return sp.csr_matrix(
        (np.ones(int(known.sum()), dtype=np.float32), (np.flatnonzero(known), item_category[known])),
        shape=(len(item_category), n_categories),
    )


def category_taste(visits: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
    """Each user's share of visits per category (users x categories, dense), ``TASTE_PRIOR`` added to each."""
    counts = np.asarray(visits[users].todense(), dtype=np.float64) + TASTE_PRIOR
    return counts / counts.sum(axis=1, keepdims=True)


def _category_visits(interactions: Interactions, item_category: np.ndarray, n_categories: int) -> sp.csr_matrix:
    """users x categories: distinct (category, hour of first touch) per user, over the items of known category."""
    times = interactions.first_ts if interactions.first_ts is not None else interactions.require_time()
    times = times.tocsr()
    users = np.repeat(np.arange(interactions.n_users), np.diff(times.indptr))
    category = item_category[times.indices]
    known = category >= 0
    hour = np.floor(times.data[known] / VISIT_SECONDS).astype(np.int64)
    visits = np.unique(np.stack([users[known], category[known], hour]), axis=1)
    return sp.csr_matrix(
        (np.ones(visits.shape[1], dtype=np.float32), (visits[0], visits[1])),
        shape=(interactions.n_users, n_categories),
    )


def segment_of(n_items: np.ndarray, bounds: SegmentBounds = SegmentBounds()) -> np.ndarray:
    """0 cold, 1 casual, 2 power, by distinct items: the same bounds evaluation reports segments by."""
    return (n_items >= bounds.cold_below).astype(np.int8) + (n_items > bounds.power_above).astype(np.int8)


def category_codes(interactions: Interactions) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(integer code per item, -1 where unknown; the category names) or (None, None) without categories."""
    category = interactions.item_feature(Columns.Category)
    if category is None:
        return None, None
    codes, names = pd.factorize(pd.Series(category, dtype=object), use_na_sentinel=True)
    return codes.astype(np.int64), np.asarray(names, dtype=str)


def _users_since(last_ts: sp.csr_matrix, since: float) -> np.ndarray:
    """Distinct users per item whose latest interaction with it is after ``since``."""
    recent = last_ts.copy()
    recent.data = (recent.data > since).astype(np.float32)
    return np.asarray(recent.sum(axis=0)).ravel()


def _days(seconds: np.ndarray) -> np.ndarray:
    return np.asarray(seconds, dtype=np.float64) / SECONDS_PER_DAY


def _column_reduce(matrix: sp.csr_matrix, reduce: np.ufunc) -> np.ndarray:
    """Per column `reduce` (np.maximum, np.minimum) of the stored values; NaN for empty columns."""
    csc = matrix.tocsc()
    result = np.full(matrix.shape[1], np.nan)
    nonempty = np.diff(csc.indptr) > 0
    result[nonempty] = reduce.reduceat(csc.data, csc.indptr[:-1][nonempty])
    return result
