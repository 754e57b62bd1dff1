"""Exact top-k of inner products that skips the items whose vector is too short to reach a user's list.

Why: publication scores every user against every item, and at a million users x 100k items the
matrix product and the selection over it were over half of ``recforge publish`` (benchmarks/README.md,
"Whole pipeline at scale"). By Cauchy-Schwarz ``u . v <= |u| |v|``: once a user's k-th best score ``t``
among some items is known, no item with ``|u| |v| < t`` can enter the user's top k. Factor models of
implicit feedback give popular items long vectors and the long tail short ones, so most of a large
catalog is usually out of reach of most users' lists.

Two passes over the users:

1. the probe: every user against the ``probe`` longest item vectors; the k-th best allowed, unseen score
   there is a lower bound of the user's true k-th score, and the items whose norm could reach it are a
   prefix of the items ordered by descending norm (the user's *reach*). A user whose reach lies inside
   the probe already has the exact answer;
2. the others against their reach only, grouped into a few widths (each a factor ``LEVEL_GROWTH`` wider)
   so that a group's item vectors are gathered once.

Each pass scores the chosen items in their catalog order, so equal scores still go to the lower item
index, and the answer is the one scoring every item gives (the tests compare them). The bound carries a
relative margin far above float32 rounding of a 64-term dot product (~4e-6 of ``|u| |v|``), so an item is
only skipped when its computed score is certainly below the k-th.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

BOUND_MARGIN = 1e-3  # relative slack on |u| |v| before an item counts as out of reach
PROBE_SHARE = 16  # the probe is 1/PROBE_SHARE of the catalog ...
PROBE_PER_K = 8  # ... and at least this many items per list slot
LEVEL_GROWTH = 2**0.25  # widths of the second pass's groups grow by this factor


def bounded_top_k(
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    k: int,
    seen: sp.csr_matrix | None,
    allowed: np.ndarray | None,
    select: Callable[[np.ndarray, int, np.ndarray | None], tuple[np.ndarray, np.ndarray]],
    block_scores: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per row of `user_vectors`, the `k` best items by inner product, as ``Recommender.recommend`` returns them.

    `seen` (rows aligned with `user_vectors`) holds the items a row must not get; `allowed` masks the items
    that may be recommended; `select(dense, k, allowed)` is the exact top-k selection of ``models/base.py``
    (ties by column); `block_scores` bounds the scores held at once.
    """
    n_users, n_items = len(user_vectors), len(item_vectors)
    items = np.full((n_users, k), -1, dtype=np.int64)
    scores = np.full((n_users, k), -np.inf, dtype=np.float32)
    if n_users == 0 or k == 0:
        return items, scores
    item_norms = np.linalg.norm(item_vectors.astype(np.float64), axis=1)
    by_norm = np.argsort(-item_norms, kind="stable")
    probe = min(n_items, max(PROBE_PER_K * k, n_items // PROBE_SHARE))
    search = _ItemSubset(item_vectors, by_norm, seen, allowed, select, block_scores)
    search.top_k(user_vectors, np.arange(n_users), probe, k, items, scores)
    reach = _reach(user_vectors, scores[:, k - 1], item_norms[by_norm])
    widths = _widths(probe, n_items)
    level = np.searchsorted(widths, reach)  # the narrowest width that holds the user's reach
    for index in np.unique(level[reach > probe]):
        rows = np.flatnonzero((level == index) & (reach > probe))
        search.top_k(user_vectors, rows, int(widths[index]), k, items, scores)
    return items, scores


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

    def __init__(self, item_vectors, by_norm, seen, allowed, select, block_scores):
        self.item_vectors, self.by_norm, self.seen, self.allowed = item_vectors, by_norm, seen, allowed
        self.select, self.block_scores = select, block_scores

    def top_k(self, user_vectors, rows: np.ndarray, width: int, k: int, items: np.ndarray, scores: np.ndarray) -> None:
        """Write the top `k` among the `width` longest item vectors into `items` and `scores` at `rows`."""
        n_items = len(self.item_vectors)
        whole = width >= n_items
        columns = np.arange(n_items) if whole else np.sort(self.by_norm[:width])  # catalog order: ties by index
        vectors = self.item_vectors if whole else np.ascontiguousarray(self.item_vectors[columns])
        allowed = None if self.allowed is None else self.allowed[columns]
        position = None
        if self.seen is not None and not whole:
            position = np.full(n_items, -1, dtype=np.int64)
            position[columns] = np.arange(len(columns))
        step = max(1, self.block_scores // len(columns))
        for start in range(0, len(rows), step):
            block = rows[start : start + step]
            dense = np.ascontiguousarray(user_vectors[block] @ vectors.T, dtype=np.float32)
            if self.seen is not None:
                seen_rows, seen_items = self.seen[block].nonzero()
                if position is not None:
                    seen_items = position[seen_items]
                    seen_rows, seen_items = seen_rows[seen_items >= 0], seen_items[seen_items >= 0]
                dense[seen_rows, seen_items] = -np.inf
            top, top_scores = self.select(dense, min(k, len(columns)), allowed)
            found = top >= 0
            top[found] = columns[top[found]]
            items[block, : top.shape[1]], scores[block, : top.shape[1]] = top, top_scores
