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


def allowed_and_categories(item_ids: np.ndarray, catalog) -> tuple[np.ndarray, np.ndarray]:
    """The allowed-items mask and integer category codes for a model's items, from the item catalog.

    Exactly publication's reading of the catalog: an item may be recommended only if it is in the
    catalog, in stock and not blocked; an item without a category gets the category "unknown".
    `catalog` is a DataFrame with item_id, category, in_stock, is_blocked.
    """
    missing = {"item_id", "category", "in_stock", "is_blocked"} - set(catalog.columns)
    if missing:
        raise ValueError(f"item catalog lacks columns {sorted(missing)}")
    known = catalog.set_index("item_id").reindex(item_ids)
    allowed = (known["in_stock"].fillna(False).astype(bool) & ~known["is_blocked"].fillna(True).astype(bool)).to_numpy(
        dtype=bool
    )
    categories = known["category"].fillna("unknown").astype(str).to_numpy()
    codes = np.unique(categories, return_inverse=True)[1].astype(np.int64)
    return allowed, codes


def rank_with_rules(
    model, user_index: np.ndarray, depth: int, allowed: np.ndarray, categories: np.ndarray, cap: float, head: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Top-`depth` lists after publication's rules: seen and disallowed items out, category cap on the head.

    Candidates are the top `depth` plus a margin of 50; users whose candidates are not diverse
    enough to fill the head within the cap are re-ranked deeper (4x, then the whole catalog), so
    the cap holds wherever the catalog allows it. Deeper candidates change nothing for a user whose
    head is already full: the greedy order only looks further down, so every stage gives the lists
    a whole-catalog ranking would, at a fraction of the cost.
    """
    n_items = len(model.item_ids)
    margin = min(n_items, depth + 50)
    ranked, scores = model.recommend(user_index, margin, allowed_items=allowed)
    order = category_capped_order(ranked, categories, cap, head)
    ranked, scores = np.take_along_axis(ranked, order, axis=1), np.take_along_axis(scores, order, axis=1)
    short = np.flatnonzero(~head_within_cap(ranked, categories, cap, head))
    for deeper in sorted({min(n_items, 4 * margin), n_items}):
        if not len(short) or deeper <= margin:
            continue
        deep, deep_scores = model.recommend(user_index[short], deeper, allowed_items=allowed)
        order = category_capped_order(deep, categories, cap, head)
        deep, deep_scores = np.take_along_axis(deep, order, axis=1), np.take_along_axis(deep_scores, order, axis=1)
        ranked[short], scores[short] = deep[:, :margin], deep_scores[:, :margin]
        if deeper < n_items:
            short = short[~head_within_cap(deep, categories, cap, head)]
    return _pad(ranked[:, :depth], depth, -1), _pad(scores[:, :depth], depth, -np.inf)


def popularity_fallback(
    popularity: np.ndarray, depth: int, allowed: np.ndarray | None, categories: np.ndarray | None, cap: float | None
) -> np.ndarray:
    """The list an unknown user gets: most popular allowed items, category cap on the head (-1 padded).

    With `allowed`, `categories` and `cap` None it is the raw popularity order.
    """
    scores = popularity.astype(np.float64, copy=True)
    if allowed is not None:
        scores[~allowed] = -np.inf
    top = np.argsort(-scores, kind="stable")
    top = top[np.isfinite(scores[top])]
    if categories is not None and cap is not None and len(top):
        top = top[category_capped_order(top[None, :], categories, cap)[0]]
    return _pad(top[None, :depth], depth, -1)[0]


def _pad(matrix: np.ndarray, depth: int, fill) -> np.ndarray:
    if matrix.shape[1] >= depth:
        return matrix
    padded = np.full((matrix.shape[0], depth), fill, dtype=matrix.dtype)
    padded[:, : matrix.shape[1]] = matrix
    return padded
