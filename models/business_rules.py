"""Business rules applied to ranked lists, shared by publication and offline evaluation.

They live beside the models (pure numpy, no I/O) so that evaluation can score the lists
exactly as publication will store them: the number we promote on is the number users get.
"""

from __future__ import annotations

import numpy as np


def category_capped_order(ranked: np.ndarray, categories: np.ndarray, cap: float, head: int = 10) -> np.ndarray:
    """Slot order per row such that no category fills more than `cap` of the first `head` slots.

    Greedy and stable: walk the ranked list, keep an item in the head while its category has
    room, otherwise defer it to just after the head. Only the head is rearranged, so the cost is
    O(users x head), and the set of items per user is unchanged. Returns indices into each row,
    for ``np.take_along_axis`` on items and scores alike.
    """
    per_category = max(1, int(np.floor(cap * head)))
    order = np.tile(np.arange(ranked.shape[1]), (ranked.shape[0], 1))
    valid = ranked >= 0
    for row in range(ranked.shape[0]):
        n = int(valid[row].sum())
        cats = categories[ranked[row, :n]]
        if n <= 1 or np.bincount(cats[:head]).max() <= per_category:
            continue  # most lists already satisfy the cap
        counts = np.zeros(categories.max() + 1, dtype=np.int64)
        kept, deferred = [], []
        for position in range(n):
            if len(kept) == head:
                break
            if counts[cats[position]] < per_category:
                counts[cats[position]] += 1
                kept.append(position)
            else:
                deferred.append(position)
        taken = set(kept) | set(deferred)
        rest = [p for p in range(n) if p not in taken]
        order[row, :n] = kept + deferred + rest
    return order


def head_within_cap(ranked: np.ndarray, categories: np.ndarray, cap: float, head: int = 10) -> np.ndarray:
    """Per row: does no category fill more than `cap` of the first `head` (valid) slots?"""
    per_category = max(1, int(np.floor(cap * head)))
    heads = ranked[:, :head]
    cats = np.where(heads >= 0, categories[np.maximum(heads, 0)], -1)
    worst = np.zeros(len(ranked), dtype=np.int64)
    for cat in np.unique(cats[cats >= 0]):
        worst = np.maximum(worst, (cats == cat).sum(axis=1))
    return worst <= per_category
