"""Business rules applied to ranked lists, shared by publication and offline evaluation.

They live beside the models (pure numpy, no I/O) so that evaluation can score the lists
exactly as publication will store them: the number we promote on is the number users get.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

try:  # the compiled walk (models/_capped.c); absent where the install had no C compiler
    from models._capped import capped_order_into as _compiled_capped_order
except ImportError:  # pragma: no cover - the Python walk below gives the same answer
    _compiled_capped_order = None


def category_capped_order(
    ranked: np.ndarray, categories: np.ndarray, cap: float, head: int, compiled: bool = True
) -> np.ndarray:
    """Slot order per row such that no category fills more than `cap` of the first `head` slots.

    Greedy and stable: walk the ranked list, keep an item in the head while its category has
    room, otherwise defer it to just after the head. Only the head is rearranged, so the cost is
    O(users x head), and the set of items per user is unchanged. Returns indices into each row,
    for ``np.take_along_axis`` on items and scores alike. ``compiled=False`` forces the Python walk
    (the compiled one, :func:`capped_order` with this one cap, must give the same; the tests compare them).
    """
    per_category = max(1, int(np.floor(cap * head)))
    if compiled and _compiled_capped_order is not None:
        return capped_order(ranked, [(categories, per_category)], head)
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


def head_within_cap(ranked: np.ndarray, categories: np.ndarray, cap: float, head: int) -> np.ndarray:
    """Per row: does no category fill more than `cap` of the first `head` (valid) slots?"""
    per_category = max(1, int(np.floor(cap * head)))
    heads = ranked[:, :head]
    cats = np.where(heads >= 0, categories[np.maximum(heads, 0)], -1)
    worst = np.zeros(len(ranked), dtype=np.int64)
    for cat in np.unique(cats[cats >= 0]):
        worst = np.maximum(worst, (cats == cat).sum(axis=1))
    return worst <= per_category


def unit_vectors(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1, so inner products are cosines (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _minmax_rows(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per row, valid scores mapped onto [0, 1] (a row of equal scores maps to 1); invalid slots to 0."""
    low = np.where(valid, scores, np.inf).min(axis=1, keepdims=True)
    high = np.where(valid, scores, -np.inf).max(axis=1, keepdims=True)
    span = np.where(high > low, high - low, 1.0)
    scaled = np.where(high > low, (scores - low) / span, 1.0)
    return np.where(valid, scaled, 0.0).astype(np.float32)


def mmr_order(
    ranked: np.ndarray, scores: np.ndarray, vectors: np.ndarray, lam: float, batch_size: int = 256
) -> np.ndarray:
    """Slot order per row by maximal marginal relevance (Carbonell & Goldstein, 1998).

    Greedily picks the slot maximising ``lam * relevance - (1 - lam) * max cosine to the items
    already picked``, with relevance the row's scores min-max scaled to [0, 1] so that `lam` means
    the same for every user and model. ``lam=1`` keeps the ranking. Vectorised over a batch of
    users (one W x W similarity block each); invalid (-1) slots stay at the tail. Returns indices
    into each row, for ``np.take_along_axis``.
    """
    n_rows, width = ranked.shape
    order = np.tile(np.arange(width), (n_rows, 1))
    if width <= 1:
        return order
    normed = unit_vectors(vectors)
    for start in range(0, n_rows, batch_size):
        rows = ranked[start : start + batch_size]
        valid = rows >= 0
        relevance = _minmax_rows(scores[start : start + batch_size], valid)
        embedded = normed[np.maximum(rows, 0)]
        similarity = embedded @ embedded.transpose(0, 2, 1)
        n_valid = valid.sum(axis=1)
        picked = ~valid  # invalid slots are never picked
        # Max cosine to the picked set; -1 (the minimum) before the first pick, which is then pure relevance.
        closest = np.full(rows.shape, -1.0, dtype=np.float32)
        batch = np.arange(len(rows))
        for step in range(int(n_valid.max(initial=0))):
            gain = lam * relevance - (1.0 - lam) * closest
            gain[picked] = -np.inf
            choice = gain.argmax(axis=1)
            active = step < n_valid
            order[start + batch[active], step] = choice[active]
            picked[batch[active], choice[active]] = True
            closest = np.maximum(closest, similarity[batch, choice])  # every slot's similarity to the new pick
    return order


def popularity_blend(
    model_items: np.ndarray,
    model_scores: np.ndarray,
    history: np.ndarray,
    popular_items: np.ndarray,
    popularity: np.ndarray,
    categories: np.ndarray,
    weight: float,
    width: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One cold user's list: model scores blended with popularity within the user's categories.

    Parameters
    ----------
    model_items, model_scores : the model's ranked candidates for the user (-1 slots ignored).
    history : item indices the user interacted with; their categories are "the user's categories".
    popular_items : allowed item indices by descending popularity (the popularity candidates).
    popularity : popularity per item (distinct users).
    categories : category code per item.
    weight : share of popularity in the blend, in [0, 1].
    width : list length to return.

    Both sides are scaled to [0, 1]: model scores min-max over the candidates (an item that is
    only a popularity candidate gets 0, as it ranked below the model's cut), popularity by the
    most popular item in the user's categories (items of other categories get 0). An item counts
    as ``from_popularity`` when the popularity term outweighs the model term in its blended score.
    Returns (items, blended scores, from_popularity), padded with -1 / -inf / False.
    """
    valid = model_items >= 0
    model_items, model_scores = model_items[valid], model_scores[valid]
    own = np.unique(categories[history]) if len(history) else None  # None: without history every category is own
    in_own = ~np.isin(popular_items, history)
    if own is not None:
        in_own &= np.isin(categories[popular_items], own)
    pop_candidates = popular_items[in_own][:width]
    candidates = np.unique(np.concatenate([model_items, pop_candidates]))
    model_part = np.zeros(len(candidates), dtype=np.float32)
    if len(model_items):
        scaled = _minmax_rows(model_scores[None, :], np.ones((1, len(model_items)), dtype=bool))[0]
        model_part[np.searchsorted(candidates, model_items)] = scaled
    top_popularity = popularity[pop_candidates].max(initial=0.0)
    pop_part = popularity[candidates] / max(top_popularity, 1e-12)
    if own is not None:
        pop_part = np.where(np.isin(categories[candidates], own), pop_part, 0.0)
    pop_part = pop_part.astype(np.float32)
    model_term, pop_term = (1.0 - weight) * model_part, weight * pop_part
    blended = model_term + pop_term
    from_model = np.isin(candidates, model_items)
    # Ties: model candidates first (the model's lowest item outranks items it did not rank at all),
    # then the more popular, then the item index, so the order is deterministic.
    order = np.lexsort((candidates, -pop_part, ~from_model, -blended))[:width]
    items = np.full(width, -1, dtype=np.int64)
    scores = np.full(width, -np.inf, dtype=np.float32)
    from_popularity = np.zeros(width, dtype=bool)
    items[: len(order)] = candidates[order]
    scores[: len(order)] = blended[order]
    from_popularity[: len(order)] = pop_term[order] > model_term[order]
    return items, scores, from_popularity


def history_anchors(
    ranked: np.ndarray, histories: list[np.ndarray], vectors: np.ndarray, min_similarity: float
) -> np.ndarray:
    """For each listed item, the user's own history item most similar to it, or -1.

    The basis of the ``similar_to:<item>`` explanation ("because you interacted with X"): the
    history item whose embedding has the highest cosine with the recommended item, kept only
    where that cosine reaches `min_similarity`, so weak resemblances are not offered as reasons.
    `histories[row]` holds the item indices of row's user.
    """
    normed = unit_vectors(vectors)
    anchors = np.full(ranked.shape, -1, dtype=np.int64)
    for row, history in enumerate(histories):
        slots = np.flatnonzero(ranked[row] >= 0)
        if not len(history) or not len(slots):
            continue
        cosine = normed[ranked[row, slots]] @ normed[history].T
        best = cosine.argmax(axis=1)
        close = cosine[np.arange(len(slots)), best] >= min_similarity
        anchors[row, slots[close]] = history[best[close]]
    return anchors


def allowed_and_categories(item_ids: np.ndarray, catalog) -> tuple[np.ndarray, np.ndarray]:
    """The allowed-items mask and integer category codes for a model's items, from the item catalog.

    Exactly publication's reading of the catalog: an item may be recommended only if it is in the
    catalog, in stock and not blocked; an item without a category gets the category "unknown".
    `catalog` is a DataFrame with item_id, category, in_stock, is_blocked.
    """
    forbidden, names = catalog_status(item_ids, catalog)
    codes = np.unique(names, return_inverse=True)[1].astype(np.int64)
    return forbidden == "", codes


def catalog_status(item_ids: np.ndarray, catalog) -> tuple[np.ndarray, np.ndarray]:
    """Per item: why the catalog forbids it (``""`` when allowed) and its category name.

    The one reading of the catalog behind :func:`allowed_and_categories`; ``recforge diagnose``
    uses the reasons to say why an item left a list. An item the catalog lacks counts as blocked,
    one without a stock flag as out of stock. Category codes are the ranks of the sorted names.
    """
    missing = {"item_id", "category", "in_stock", "is_blocked"} - set(catalog.columns)
    if missing:
        raise ValueError(f"item catalog lacks columns {sorted(missing)}")
    known = catalog.set_index("item_id").reindex(item_ids)
    listed = np.isin(np.asarray(item_ids, dtype=str), catalog["item_id"].to_numpy(dtype=str))
    blocked = known["is_blocked"].astype("boolean").fillna(True).to_numpy(dtype=bool)
    in_stock = known["in_stock"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    forbidden = np.full(len(item_ids), "", dtype=object)
    forbidden[~in_stock] = "out of stock"
    forbidden[blocked] = "blocked"
    forbidden[~listed] = "not in the catalog"
    names = known["category"].fillna("unknown").astype(str).to_numpy()
    return forbidden, names


def popularity_fallback(
    popularity: np.ndarray,
    depth: int,
    allowed: np.ndarray | None,
    categories: np.ndarray | None,
    cap: float | None,
    head: int | None = None,
) -> np.ndarray:
    """The list an unknown user gets: most popular allowed items, category cap on the head (-1 padded).

    Publication stores it and evaluation scores it, so both call this. With `allowed`,
    `categories` and `cap` None it is the raw popularity order; with a `cap`, `head` is the
    ``category_cap_head`` of the rules.
    """
    if cap is not None and head is None:
        raise ValueError("popularity_fallback: a category cap needs its head size (ListRules.category_cap_head)")
    scores = popularity.astype(np.float64, copy=True)
    if allowed is not None:
        scores[~allowed] = -np.inf
    top = np.argsort(-scores, kind="stable")
    top = top[np.isfinite(scores[top])]
    if categories is not None and cap is not None and len(top):
        top = top[category_capped_order(top[None, :], categories, cap, head)[0]]
    padded = np.full(depth, -1, dtype=np.int64)
    padded[: min(depth, len(top))] = top[:depth]
    return padded


@dataclass(frozen=True)
class PreparedCaps:
    """Caps as the compiled walk reads them: built once per list run, not once per row that needs a deeper walk."""

    caps: list[tuple[np.ndarray, int]]
    groups: np.ndarray  # caps x items, int64 group codes (-1 = no group)
    sizes: np.ndarray  # per cap: its codes are below this
    limits: np.ndarray  # per cap: the most items one group may place in the head

    @classmethod
    def of(cls, caps: list[tuple[np.ndarray, int]] | PreparedCaps) -> PreparedCaps:
        if isinstance(caps, PreparedCaps):
            return caps
        groups = np.ascontiguousarray(np.stack([np.asarray(codes, dtype=np.int64) for codes, _ in caps]))
        sizes = np.maximum(groups.max(axis=1, initial=-1) + 1, 1).astype(np.int64)
        return cls(list(caps), groups, sizes, np.array([limit for _, limit in caps], dtype=np.int64))

    def __iter__(self):
        """The (codes, limit) pairs, as an unprepared list of caps gives them: the Python walk reads either."""
        return iter(self.caps)


def capped_order(
    ranked: np.ndarray, caps: list[tuple[np.ndarray, int]] | PreparedCaps, head: int, compiled: bool = True
) -> np.ndarray:
    """Slot order per row such that, in the first `head` slots, no group of any cap holds more than its limit.

    `caps` pairs a group code per item (-1 = no group: never counted) with the most items one group
    may place in the head. Greedy and stable like :func:`category_capped_order` (which is the case
    of one cap, the category's): walk the ranked list, keep an item in the head while every one of
    its groups has room, otherwise defer it to just after the head. Several caps are enforced in
    one walk, so meeting one cap cannot break another. Returns indices into each row.

    The walk is compiled (``models/_capped.c``, when built): in Python it was a quarter of publishing a
    million users. `caps` may come prepared (:class:`PreparedCaps`) when many calls share them.
    ``compiled=False`` forces the Python walk (the tests compare the two).
    """
    if compiled and _compiled_capped_order is not None and len(ranked):
        prepared = PreparedCaps.of(caps)
        ranked = np.ascontiguousarray(ranked, dtype=np.int64)
        order = np.empty_like(ranked)
        n_caps, n_items = prepared.groups.shape
        _compiled_capped_order(
            ranked, ranked.shape[0], ranked.shape[1], prepared.groups, n_caps, n_items, prepared.sizes,
            prepared.limits, head, order,
        )  # fmt: skip
        return order
    order = np.tile(np.arange(ranked.shape[1]), (ranked.shape[0], 1))
    valid = ranked >= 0
    for row in range(ranked.shape[0]):
        n = int(valid[row].sum())
        if n <= 1:
            continue
        groups = [codes[ranked[row, :n]] for codes, _ in caps]
        if all(_group_fits(g[:head], limit) for g, (_, limit) in zip(groups, caps, strict=True)):
            continue  # most lists already satisfy every cap
        counts = [dict() for _ in caps]
        kept, deferred = [], []
        for position in range(n):
            if len(kept) == head:
                break
            fits = all(
                g[position] < 0 or c.get(g[position], 0) < limit
                for g, c, (_, limit) in zip(groups, counts, caps, strict=True)
            )
            if fits:
                for g, c in zip(groups, counts, strict=True):
                    if g[position] >= 0:
                        c[g[position]] = c.get(g[position], 0) + 1
                kept.append(position)
            else:
                deferred.append(position)
        taken = set(kept) | set(deferred)
        order[row, :n] = kept + deferred + [p for p in range(n) if p not in taken]
    return order


def _group_fits(groups: np.ndarray, limit: int) -> bool:
    known = groups[groups >= 0]
    return not len(known) or int(np.bincount(known).max()) <= limit


def head_within_caps(ranked: np.ndarray, caps: list[tuple[np.ndarray, int]] | PreparedCaps, head: int) -> np.ndarray:
    """Per row: does every cap of :func:`capped_order` hold on the first `head` slots?"""
    heads = ranked[:, :head]
    within = np.ones(len(ranked), dtype=bool)
    for codes, limit in caps:
        groups = np.where(heads >= 0, codes[np.maximum(heads, 0)], -1)
        for group in np.unique(groups[groups >= 0]):
            within &= (groups == group).sum(axis=1) <= limit
    return within


def calibrated_order(
    ranked: np.ndarray,
    scores: np.ndarray,
    target: np.ndarray,
    categories: np.ndarray,
    lam: float,
    head: int,
    alpha: float = 0.01,
    batch_size: int = 256,
) -> np.ndarray:
    """Slot order per row by Steck's calibrated re-ranking (Calibrated Recommendations, RecSys 2018).

    Greedily fills the first `head` slots with the candidate maximising
    ``(1 - lam) * sum of relevance - lam * KL(p || q~)`` of the list so far plus that candidate,
    where p = ``target[row]`` (the user's category mix in their history), q the list's category mix
    and q~ = (1 - alpha) q + alpha p (his smoothing). Relevance is the row's scores min-max scaled
    to [0, 1], as for MMR, so `lam` means the same for every model. ``lam=0`` keeps the ranking; a
    row without history (p all zero) is left alone. The items after the head keep their order.
    Vectorised over a batch of rows (head steps x candidates x categories each); invalid (-1) slots
    are never picked. Returns indices into each row.
    """
    n_rows, width = ranked.shape
    order = np.tile(np.arange(width), (n_rows, 1))
    if lam <= 0 or width <= 1:
        return order
    n_categories = target.shape[1]
    # Each step holds a few rows x width x categories arrays: keep one near 4M floats (32 MB), so a
    # catalog with a thousand categories takes smaller batches instead of gigabytes.
    batch_size = max(1, min(batch_size, 4_000_000 // max(1, width * n_categories)))
    for start in range(0, n_rows, batch_size):
        rows = ranked[start : start + batch_size]
        p = target[start : start + batch_size]
        valid = rows >= 0
        relevance = _minmax_rows(scores[start : start + batch_size], valid).astype(np.float64)
        onehot = np.eye(n_categories)[categories[np.maximum(rows, 0)]]  # rows x width x categories
        picked = ~valid
        counts = np.zeros((len(rows), n_categories))
        gained = np.zeros(len(rows))
        chosen = np.full((len(rows), min(head, width)), -1, dtype=np.int64)
        n_valid = valid.sum(axis=1)
        batch = np.arange(len(rows))
        for step in range(min(head, width)):
            q = (counts[:, None, :] + onehot) / (step + 1)
            smoothed = (1 - alpha) * q + alpha * p[:, None, :]
            ratio = np.divide(p[:, None, :], smoothed, out=np.ones_like(smoothed), where=p[:, None, :] > 0)
            kl = (p[:, None, :] * np.log(ratio)).sum(axis=2)
            gain = (1 - lam) * (gained[:, None] + relevance) - lam * kl
            gain[picked] = -np.inf
            choice = gain.argmax(axis=1)
            active = step < n_valid
            chosen[active, step] = choice[active]
            picked[batch[active], choice[active]] = True
            counts[active] += onehot[batch[active], choice[active]]
            gained[active] += relevance[batch[active], choice[active]]
        for local in range(len(rows)):
            if p[local].sum() <= 0:
                continue  # no history: nothing to calibrate to
            head_slots = chosen[local][chosen[local] >= 0]
            rest = np.setdiff1d(np.arange(width), head_slots, assume_unique=True)
            order[start + local] = np.concatenate([head_slots, rest])
    return order


def seller_codes(item_ids: np.ndarray, catalog) -> np.ndarray | None:
    """Integer seller code per item from the catalog's ``seller`` column; -1 where unknown; None without the column.

    A data set with no seller (MovieLens) has no column, or only nulls: the seller cap then has
    nothing to hold and the audit says so.
    """
    if "seller" not in catalog.columns:
        return None
    names = catalog.set_index("item_id").reindex(item_ids)["seller"]
    known = names.notna().to_numpy()
    if not known.any():
        return None
    codes = np.full(len(item_ids), -1, dtype=np.int64)
    codes[known] = np.unique(names[known].astype(str).to_numpy(), return_inverse=True)[1]
    return codes


def category_mix(rows: sp.csr_matrix, categories: np.ndarray, n_categories: int) -> np.ndarray:
    """Per row of a users x items matrix: the share of its (non-zero) items in each category."""
    binary = rows.tocsr().copy()
    binary.data = np.ones_like(binary.data, dtype=np.float64)
    onehot = sp.csr_matrix(
        (np.ones(len(categories)), (np.arange(len(categories)), categories)), shape=(len(categories), n_categories)
    )
    counts = np.asarray((binary @ onehot).todense())
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
