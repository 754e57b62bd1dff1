"""Exact top-k of inner products that skips the items whose vector is too short to reach a user's list.

Why: publication scores every user against every item, and at a million users x 100k items the
matrix product and the selection over it were over half of ``recforge publish`` (benchmarks/README.md,
"Whole pipeline at scale"). By Cauchy-Schwarz ``u . v <= |u| |v|``: once a user's k-th best score ``t``
among some items is known, no item with ``|u| |v| < t`` can enter the user's top k. Factor models of
implicit feedback give popular items long vectors and the long tail short ones, so most of a large
catalog is usually out of reach of most users' lists.

Two passes over the users, after a pilot:

0. the pilot: a few hundred evenly spaced users against a narrow prefix of the items by descending norm
   tell how wide the first pass must be for most users (on the 1M-user ALS model, 90% of users need
   under 16k of 99k items); a catalog the bound cannot prune gets the whole catalog, one pass, as before;
1. the probe: every user against the ``probe`` longest item vectors; the k-th best allowed, unseen score
   there is a lower bound of the user's true k-th score, and the items whose norm could reach it are a
   prefix of the items ordered by descending norm (the user's *reach*). A user whose reach lies inside
   the probe already has the exact answer;
2. the others against their reach only, grouped into a few widths (each a factor ``LEVEL_GROWTH`` wider)
   so that a group's item vectors are gathered once.

Each pass scores the chosen items in their catalog order, so equal scores still go to the lower item
index. The bound carries a relative margin far above float32 rounding of a 64-term dot product (~4e-6 of
``|u| |v|``), so an item is only skipped when its computed score is certainly below the k-th. The answer
is the one scoring every item gives (the tests compare them exactly on integer factors), up to how BLAS
rounds a product: it sums in an order that depends on the block's shape, so a score can differ in its last
bit, as it already could between two batch sizes of the old search (benchmarks/list_scoring.py counts it).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from models.base import SCORE_BLOCK, SORT_COLUMNS_PER_K, top_k

BOUND_MARGIN = 1e-3  # relative slack on |u| |v| before an item counts as out of reach
PILOT_USERS = 256  # users whose reach sets the probe's width
PILOT_SHARE = 16  # the pilot scores 1/PILOT_SHARE of the catalog ...
PROBE_PER_K = SORT_COLUMNS_PER_K + 1  # ... and wide enough per list slot for top_k's compiled selection
PROBE_COVERS = 0.9  # share of the pilot's users whose reach the probe holds
LEVEL_GROWTH = 2**0.25  # widths of the second pass's groups grow by this factor


def bounded_top_k(
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    k: int,
    seen: sp.csr_matrix | None,
    allowed: np.ndarray | None,
    block_scores: int = SCORE_BLOCK,
) -> tuple[np.ndarray, np.ndarray]:
    """Per row of `user_vectors`, the `k` best items by inner product, as ``Recommender.recommend`` returns them.

    `seen` (rows aligned with `user_vectors`) holds the items a row must not get; `allowed` masks the items
    that may be recommended; `block_scores` bounds the scores held at once. Each pass selects with
    ``models.base.top_k`` (ties by column).
    """
    n_users, n_items = len(user_vectors), len(item_vectors)
    if n_users == 0 or k == 0:
        return np.full((n_users, k), -1, dtype=np.int64), np.full((n_users, k), -np.inf, dtype=np.float32)
    item_norms = np.linalg.norm(item_vectors.astype(np.float64), axis=1)
    by_norm = np.argsort(-item_norms, kind="stable")
    sorted_norms = item_norms[by_norm]
    search = _ItemSubset(item_vectors, by_norm, seen, allowed, block_scores)
    probe = _probe_width(user_vectors, k, search, sorted_norms)
    items, scores = search.top_k(user_vectors, np.arange(n_users), probe, k)
    reach = _reach(user_vectors, scores[:, k - 1], sorted_norms)
    widths = _widths(probe, n_items)
    level = np.searchsorted(widths, reach)  # the narrowest width that holds the user's reach
    for index in np.unique(level[reach > probe]):
        rows = np.flatnonzero((level == index) & (reach > probe))
        items[rows], scores[rows] = search.top_k(user_vectors, rows, int(widths[index]), k)
    return items, scores


def _probe_width(user_vectors: np.ndarray, k: int, search: _ItemSubset, sorted_norms: np.ndarray) -> int:
    """How many of the longest item vectors the first pass scores: enough for most users' reach.

    Measured on a pilot of evenly spaced users against a narrow prefix: the first pass then finishes about
    ``PROBE_COVERS`` of the users, and the selection (about as costly per user at 10k items as at 100k) runs
    once for them. A catalog the bound cannot prune gets the whole catalog: one pass, as if unbounded.
    """
    n_users, n_items = len(user_vectors), len(sorted_norms)
    narrowest = min(n_items, max(PROBE_PER_K * k, n_items // PILOT_SHARE))
    pilot = np.unique(np.linspace(0, n_users - 1, min(n_users, PILOT_USERS)).astype(np.int64))
    _, scores = search.top_k(user_vectors, pilot, narrowest, k)
    reach = _reach(user_vectors[pilot], scores[:, k - 1], sorted_norms)
    return int(min(n_items, max(narrowest, np.quantile(reach, PROBE_COVERS))))


def _reach(user_vectors: np.ndarray, kth: np.ndarray, sorted_norms: np.ndarray) -> np.ndarray:
    """Per user, how many of the longest item vectors could score at least `kth` (the whole catalog when unsure)."""
    user_norms = np.linalg.norm(user_vectors.astype(np.float64), axis=1)
    reach = np.full(len(kth), len(sorted_norms), dtype=np.int64)
    bounded = (kth > 0) & np.isfinite(kth) & (user_norms > 0)
    shortest = kth[bounded] / (user_norms[bounded] * (1 + BOUND_MARGIN))  # shorter vectors cannot reach kth
    reach[bounded] = np.searchsorted(-sorted_norms, -shortest, side="right")
    return reach


def _widths(probe: int, n_items: int) -> np.ndarray:
    """The second pass's group widths: from the probe up to the whole catalog, each LEVEL_GROWTH wider."""
    widths = [probe]
    while widths[-1] < n_items:
        widths.append(min(n_items, max(widths[-1] + 1, int(np.ceil(widths[-1] * LEVEL_GROWTH)))))
    return np.asarray(widths, dtype=np.int64)


class _ItemSubset:
    """Scores rows of users against the `width` longest item vectors, kept in catalog order."""

    def __init__(self, item_vectors, by_norm, seen, allowed, block_scores: int):
        self.item_vectors, self.by_norm, self.seen, self.allowed = item_vectors, by_norm, seen, allowed
        self.block_scores = block_scores

    def top_k(self, user_vectors, rows: np.ndarray, width: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The top `k` (item indices, scores) of the users at `rows` among the `width` longest item vectors."""
        n_items = len(self.item_vectors)
        whole = width >= n_items
        columns = np.arange(n_items) if whole else np.sort(self.by_norm[:width])  # catalog order: ties by index
        vectors = self.item_vectors if whole else np.ascontiguousarray(self.item_vectors[columns])
        allowed = None if self.allowed is None else self.allowed[columns]
        position = None
        if self.seen is not None and not whole:
            position = np.full(n_items, -1, dtype=np.int64)
            position[columns] = np.arange(len(columns))
        items = np.empty((len(rows), k), dtype=np.int64)
        scores = np.empty((len(rows), k), dtype=np.float32)
        step = max(1, self.block_scores // len(columns))
        for start in range(0, len(rows), step):
            block = rows[start : start + step]
            dense = np.ascontiguousarray(user_vectors[block] @ vectors.T, dtype=np.float32)
            if self.seen is not None:
                seen_users, seen_items = self.seen[block].nonzero()
                if position is not None:
                    seen_items = position[seen_items]
                    seen_users, seen_items = seen_users[seen_items >= 0], seen_items[seen_items >= 0]
                dense[seen_users, seen_items] = -np.inf
            top, top_scores = top_k(dense, k, allowed)  # width >= k: every pass is at least the probe
            found = top >= 0
            top[found] = columns[top[found]]
            items[start : start + len(block)], scores[start : start + len(block)] = top, top_scores
        return items, scores
