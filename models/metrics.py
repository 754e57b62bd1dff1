"""Ranking and beyond-accuracy metrics over whole-catalog top-k lists, vectorised over users.

Inputs are integer matrices: ``recommended`` (users x k item indices, -1 = empty slot) and
``relevant`` (a users x items sparse matrix of held-out interactions; it may have more columns
than the model knows items, so held-out items the model could not have seen still count in the
denominators). Accuracy metrics give one value per user and are averaged over the users with at
least one held-out item; ``calc_metrics`` gathers them all.

Definitions (binary relevance; ``rel_u`` = the user's held-out items, ``hit_i`` = slot i is in rel_u):

- ``ndcg_at_k``: DCG of the hits with 1/log2(rank + 1) discounts over the ideal DCG of min(|rel_u|, k) hits.
- ``recall_at_k``: hits in the top k / |rel_u| (not capped at k: a user with 80 held-out items cannot
  reach 1 at k = 50, which keeps the metric comparable across users).
- ``map_at_k``: sum over hit slots i <= k of precision@i, divided by min(|rel_u|, k).
- ``mrr_at_k``: 1 / rank of the first hit in the top k, 0 without one.
- ``hit_rate_at_k``: 1 if the top k holds any hit.

Beyond accuracy (need a ``CatalogStats``; all over the top k of the same users):

- ``coverage_at_k``: distinct items recommended / items eligible for recommendation (a set metric).
- ``diversity_at_k``: intra-list diversity by category, the share of item pairs in a list whose
  categories differ (0 = one category, 1 = all different).
- ``novelty_at_k``: mean self-information -log2 p(i) of the recommended items, p(i) = (training users
  of i + 1) / (training users + 1) (Laplace-smoothed so an item no one saw stays finite).
- ``popularity_bias_at_k``: share of slots filled by the head, the top 1% most popular items.
- ``new_item_exposure_at_k``: share of slots filled by new items (when the catalog marks them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


def at(metric: str, k: int) -> str:
    """The one spelling of a metric at a cut-off: ``at("ndcg", 10)`` -> ``ndcg_at_10``."""
    return f"{metric}_at_{k}"


SE_SUFFIX = "_se"  # a metric's standard error over the evaluated users: ``ndcg_at_10_se``


def per_user_accuracy(
    recommended: np.ndarray, relevant: sp.csr_matrix, ndcg_k: int = 10, recall_k: int = 50, k: int | None = None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The rows of users with at least one held-out item, and each accuracy metric per such user.

    What :func:`calc_metrics` averages and :func:`standard_errors` spreads: one definition for both.
    """
    k = ndcg_k if k is None else k
    n_relevant = np.asarray((relevant > 0).sum(axis=1)).ravel()
    users = np.flatnonzero(n_relevant > 0)
    hits = hits_matrix(recommended[users], relevant[users])
    n_rel = n_relevant[users]
    per_user = {
        at("ndcg", ndcg_k): ndcg_at_k(hits, n_rel, ndcg_k),
        at("recall", recall_k): recall_at_k(hits, n_rel, recall_k),
        at("map", k): map_at_k(hits, n_rel, k),
        at("mrr", k): mrr_at_k(hits, k),
        at("hit_rate", k): hit_rate_at_k(hits, k),
    }
    return users, per_user


def standard_errors(
    recommended: np.ndarray, relevant: sp.csr_matrix, ndcg_k: int = 10, recall_k: int = 50, k: int | None = None
) -> dict[str, float]:
    """The standard error of each accuracy metric's mean over users: sample std (ddof 1) / sqrt(users).

    Over the same users as :func:`calc_metrics` (those with a held-out item); keys are the metric
    names with ``SE_SUFFIX``. It is the spread of the estimate when the users are a random sample
    of the test users (``Fold.sample_users``), and 0 with fewer than two users.
    """
    _, per_user = per_user_accuracy(recommended, relevant, ndcg_k, recall_k, k)
    return {
        name + SE_SUFFIX: float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
        for name, values in per_user.items()
    }


def in_segment(segment: str, metric: str) -> str:
    """A metric measured on one activity segment's users: ``segment.cold.ndcg_at_10``."""
    return f"segment.{segment}.{metric}"


@dataclass(frozen=True)
class MetricNames:
    """The names every stage uses for the metrics at the evaluation cut-offs (``eval_k``, ``recall_k``).

    Training logs, tracking, the gate, the registry listing, status and the DAG's asset metadata all
    read them from here, so changing ``eval_k`` renames the metrics everywhere at once instead of
    leaving a literal ``ndcg_at_10`` to fail with a KeyError.
    """

    k: int = 10
    recall_k: int = 50

    @property
    def primary(self) -> str:
        """What the best candidate is chosen by and the gate's lift check compares."""
        return at("ndcg", self.k)

    @property
    def recall(self) -> str:
        return at("recall", self.recall_k)

    @property
    def coverage(self) -> str:
        return at("coverage", self.k)

    @property
    def cold_primary(self) -> str:
        """The primary metric on the cold segment: a gate guardrail."""
        return in_segment("cold", self.primary)

    @property
    def accuracy(self) -> tuple[str, ...]:
        return (self.primary, self.recall, at("map", self.k), at("mrr", self.k), at("hit_rate", self.k))

    @property
    def beyond_accuracy(self) -> tuple[str, ...]:
        """Always computed with a catalog (new-item exposure only when the catalog marks new items)."""
        return tuple(at(m, self.k) for m in ("coverage", "diversity", "novelty", "popularity_bias"))

    @property
    def exposure_gini(self) -> str:
        """Gini of item exposure in the top k: the gate's exposure guardrail (may not rise beyond a tolerance)."""
        return at("exposure_gini", self.k)

    @property
    def long_tail_share(self) -> str:
        """Share of top-k slots on the long tail (bottom 80% of items by popularity)."""
        return at("long_tail_share", self.k)

    @property
    def calibration_kl(self) -> str:
        """Steck's miscalibration of the top k against the user's history (mean over users; lower is better)."""
        return at("calibration_kl", self.k)

    @property
    def bias(self) -> tuple[str, ...]:
        """The bias audit's metrics that evaluation computes on every list (``models.evaluation.exposure``)."""
        return (self.exposure_gini, self.long_tail_share, self.calibration_kl)

    @property
    def new_item_exposure(self) -> str:
        return at("new_item_exposure", self.k)

    @property
    def key(self) -> tuple[str, ...]:
        """The few that sum a model up: logged per fold, shown by ``recforge models list``."""
        return (self.primary, self.cold_primary, self.coverage, self.recall)

    @property
    def headline(self) -> tuple[str, ...]:
        """What ``recforge status`` prints for the champion."""
        return (self.primary, self.recall)


@dataclass(frozen=True)
class CatalogStats:
    """What beyond-accuracy metrics need to know about the items the lists are drawn from.

    Parameters
    ----------
    categories : int category code per item (index = item index).
    popularity : distinct training users per item.
    n_users : training users, the denominator of an item's popularity.
    eligible : items that may be recommended at all (in stock, not blocked); coverage's denominator.
    is_new : items that count as new (see ``models.evaluation.segments``); optional.
    head_share : the top share of items by popularity that counts as the popularity head.
    """

    categories: np.ndarray
    popularity: np.ndarray
    n_users: int
    eligible: np.ndarray | None = None
    is_new: np.ndarray | None = None
    head_share: float = 0.01

    def __post_init__(self):
        if len(self.categories) != len(self.popularity):
            raise ValueError(
                f"CatalogStats: {len(self.categories)} categories but {len(self.popularity)} popularity values"
            )
        for name in ("eligible", "is_new"):
            mask = getattr(self, name)
            if mask is not None and len(mask) != len(self.popularity):
                raise ValueError(f"CatalogStats.{name} has {len(mask)} entries for {len(self.popularity)} items")
        if not 0 < self.head_share <= 1:
            raise ValueError(f"CatalogStats.head_share must be in (0, 1], got {self.head_share}")

    @property
    def n_items(self) -> int:
        return len(self.popularity)

    @property
    def n_eligible(self) -> int:
        return int(self.eligible.sum()) if self.eligible is not None else self.n_items

    def head_items(self) -> np.ndarray:
        """Boolean mask of the popularity head: the ceil(head_share x items) most popular items."""
        n_head = max(1, int(np.ceil(self.head_share * self.n_items)))
        head = np.zeros(self.n_items, dtype=bool)
        head[np.argsort(-self.popularity, kind="stable")[:n_head]] = True
        return head

    def self_information(self) -> np.ndarray:
        return -np.log2((self.popularity + 1.0) / (self.n_users + 1.0))


def hits_matrix(recommended: np.ndarray, relevant: sp.csr_matrix) -> np.ndarray:
    """Boolean (users x k): is the item in this slot among the user's held-out items?"""
    rows = np.repeat(np.arange(recommended.shape[0]), recommended.shape[1])
    cols = recommended.ravel()
    valid = cols >= 0
    hits = np.zeros(rows.shape, dtype=bool)
    if valid.any():
        hits[valid] = np.asarray(relevant[rows[valid], cols[valid]]).ravel() > 0
    return hits.reshape(recommended.shape)


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2))


def ndcg_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    discounts = _discounts(k)
    dcg = (hits[:, :k] * discounts[: hits[:, :k].shape[1]]).sum(axis=1)
    ideal_len = np.minimum(n_relevant, k)
    idcg = np.concatenate([[0.0], np.cumsum(discounts)])[ideal_len]
    return np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0)


def recall_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    found = hits[:, :k].sum(axis=1)
    return np.divide(found, n_relevant, out=np.zeros(len(found)), where=n_relevant > 0)


def map_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    top = hits[:, :k].astype(np.float64)
    precision = np.cumsum(top, axis=1) / np.arange(1, top.shape[1] + 1)
    denominator = np.minimum(n_relevant, k).astype(np.float64)
    return np.divide((precision * top).sum(axis=1), denominator, out=np.zeros(len(top)), where=denominator > 0)


def mrr_at_k(hits: np.ndarray, k: int) -> np.ndarray:
    top = hits[:, :k]
    first = top.argmax(axis=1)
    return np.where(top.any(axis=1), 1.0 / (first + 1), 0.0)


def hit_rate_at_k(hits: np.ndarray, k: int) -> np.ndarray:
    return hits[:, :k].any(axis=1).astype(np.float64)


def coverage_at_k(recommended: np.ndarray, k: int, n_eligible: int) -> float:
    """Distinct items in the users' top k over the items that could have been recommended."""
    top = recommended[:, :k]
    return float(len(np.unique(top[top >= 0])) / n_eligible) if n_eligible else 0.0


def diversity_at_k(recommended: np.ndarray, categories: np.ndarray, k: int) -> np.ndarray:
    """Per user: share of pairs in the top k with different categories (NaN for lists under 2 items).

    Counted, not looped: with c_j items of category j among n, same-category pairs are
    sum c_j (c_j - 1) / 2 out of n (n - 1) / 2.
    """
    top = recommended[:, :k]
    valid = top >= 0
    n_categories = int(categories.max()) + 1 if len(categories) else 1
    codes = np.where(valid, categories[np.maximum(top, 0)], 0)
    flat = (np.arange(len(top))[:, None] * n_categories + codes)[valid]
    counts = np.bincount(flat, minlength=len(top) * n_categories).reshape(len(top), n_categories).astype(np.float64)
    n = valid.sum(axis=1).astype(np.float64)
    pairs = n * (n - 1) / 2
    same = (counts * (counts - 1) / 2).sum(axis=1)
    return np.divide(pairs - same, pairs, out=np.full(len(top), np.nan), where=pairs > 0)


def slot_mean(recommended: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
    """Per user: mean of a per-item value over the filled slots of the top k (NaN for an empty list)."""
    top = recommended[:, :k]
    valid = top >= 0
    total = np.where(valid, values[np.maximum(top, 0)], 0.0).sum(axis=1)
    n = valid.sum(axis=1)
    return np.divide(total, n, out=np.full(len(top), np.nan), where=n > 0)


def _mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else 0.0


def calc_metrics(
    recommended: np.ndarray,
    relevant: sp.csr_matrix,
    ndcg_k: int = 10,
    recall_k: int = 50,
    *,
    k: int | None = None,
    catalog: CatalogStats | None = None,
) -> dict[str, float]:
    """Every metric, averaged over users with at least one held-out item.

    Always: ``ndcg_at_{ndcg_k}``, ``recall_at_{recall_k}``, ``n_eval_users``, and ``map_at_{k}``,
    ``mrr_at_{k}``, ``hit_rate_at_{k}`` (k defaults to ndcg_k). With a ``catalog`` also coverage,
    diversity, novelty, popularity bias (and new-item exposure when the catalog marks new items), at k.
    """
    k = ndcg_k if k is None else k
    if recommended.ndim != 2 or recommended.shape[0] != relevant.shape[0]:
        raise ValueError(
            f"recommended has shape {recommended.shape} but relevant has {relevant.shape[0]} users: one row per user"
        )
    depth = max(ndcg_k, recall_k, k)
    if recommended.shape[1] < depth:
        raise ValueError(f"lists hold {recommended.shape[1]} items but metrics need the top {depth}")
    users, per_user = per_user_accuracy(recommended, relevant, ndcg_k, recall_k, k)
    lists = recommended[users]
    means = {name: float(values.mean()) if len(users) else 0.0 for name, values in per_user.items()}
    ndcg, recall = at("ndcg", ndcg_k), at("recall", recall_k)
    metrics = {ndcg: means[ndcg], recall: means[recall], "n_eval_users": int(len(users)), **means}
    if catalog is not None:
        if lists.size and lists.max() >= catalog.n_items:
            raise ValueError(f"lists name item index {lists.max()} but the catalog has {catalog.n_items} items")
        metrics[at("coverage", k)] = coverage_at_k(lists, k, catalog.n_eligible)
        metrics[at("diversity", k)] = _mean(diversity_at_k(lists, catalog.categories, k))
        metrics[at("novelty", k)] = _mean(slot_mean(lists, catalog.self_information(), k))
        metrics[at("popularity_bias", k)] = _mean(slot_mean(lists, catalog.head_items().astype(np.float64), k))
        if catalog.is_new is not None:
            metrics[at("new_item_exposure", k)] = _mean(slot_mean(lists, catalog.is_new.astype(np.float64), k))
    return metrics
