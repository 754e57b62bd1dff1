"""The lists users get: a model's ranking after publication's business rules, for any set of users.

One function, :func:`ranked_lists`, builds them for publication (every known user) and for offline
evaluation (the users of a fold), so the number a model is promoted on is the number users get.

Order of the rules, per user, all on one candidate array of top N + margin, so that each rule can
promote items from below the cut:

1. hard exclusions while scoring: items the user has seen (purchased, rated, ...), blocked and
   out-of-stock items are never candidates;
2. cold users (fewer than `cold_user_below` distinct training items) get the model blended with
   popularity within their categories (:func:`models.lists.rules.popularity_blend`);
3. optional MMR diversity re-ranking;
4. optional calibrated re-ranking (Steck 2018): the first ``category_cap_head`` slots re-picked so
   their category mix follows the user's history (``calibration_lambda``, 0 = off);
5. optional seller cap: no seller holds more than ``seller_cap`` of the first ``category_cap_head``
   slots (0 = off; items without a seller are not counted);
6. the category cap on the first ``category_cap_head`` slots (10 by default), a hard rule, so it
   comes last and wins, enforced in one walk together with the seller cap so that neither breaks
   the other; users whose candidates are too uniform to fill the head within the caps are
   re-ranked deeper (4x the candidates, then the whole catalog, still without any excluded item).

Each slot remembers where its item came from (``MODEL`` or ``POPULAR``), which publication turns
into the reason it shows.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np
import scipy.sparse as sp

from models.base import Recommender
from models.lists.rules import (
    PreparedCaps,
    calibrated_order,
    capped_order,
    category_capped_order,
    category_mix,
    head_within_caps,
    mmr_order,
    popularity_blend,
)
from models.popularity import distinct_users_per_item

log = logging.getLogger(__name__)

MODEL, POPULAR = 0, 1  # where a slot's item came from


@dataclass(frozen=True)
class ListRules:
    """The rules a publication applies, exactly as recorded in its manifest (defaults = the settings' defaults)."""

    top_n: int = 100
    candidate_margin: int = 50
    category_cap: float = 0.4
    category_cap_head: int = 10
    cold_user_below: int = 5
    cold_popularity_weight: float = 0.5
    mmr_enabled: bool = False
    mmr_lambda: float = 0.7
    reason_min_similarity: float = 0.5
    calibration_lambda: float = 0.0
    seller_cap: int = 0

    def __post_init__(self):
        if self.top_n < 1 or self.candidate_margin < 0:
            raise ValueError(f"top_n must be >= 1 and candidate_margin >= 0, got {self.top_n}, {self.candidate_margin}")
        if not 0 < self.category_cap <= 1:
            raise ValueError(f"category_cap must be in (0, 1], got {self.category_cap}")
        if not 0 <= self.calibration_lambda <= 1:
            raise ValueError(f"calibration_lambda must be in [0, 1], got {self.calibration_lambda}")
        if self.seller_cap < 0:
            raise ValueError(f"seller_cap must be >= 0 (0 = off), got {self.seller_cap}")

    @property
    def per_category(self) -> int:
        """The most items one category may place in the head."""
        return max(1, int(np.floor(self.category_cap * self.category_cap_head)))

    @classmethod
    def from_settings(cls, settings) -> ListRules:
        """From the recforge settings (any object with their attribute names; models/ does not import pipelines/)."""
        return cls(
            top_n=settings.publish_top_n,
            candidate_margin=settings.publish_candidate_margin,
            category_cap=settings.category_cap,
            category_cap_head=settings.category_cap_head,
            cold_user_below=settings.cold_user_below,
            cold_popularity_weight=settings.cold_popularity_weight,
            mmr_enabled=settings.mmr_enabled,
            mmr_lambda=settings.mmr_lambda,
            reason_min_similarity=settings.reason_min_similarity,
            calibration_lambda=settings.calibration_lambda,
            seller_cap=settings.seller_cap,
        )

    def manifest(self) -> dict:
        """Rule names and their parameters, in the order they are applied."""
        return {
            "applied": [
                "exclude_seen_items",
                "exclude_purchased_items",
                "exclude_blocked_items",
                "exclude_out_of_stock_items",
                "cold_user_popularity_blend",
                *(["mmr_diversity"] if self.mmr_enabled else []),
                *([CALIBRATION] if self.calibration_lambda > 0 else []),
                *([self.seller_cap_stage] if self.seller_cap > 0 else []),
                f"category_cap_top{self.category_cap_head}",
                "reasons",
            ],
            "parameters": asdict(self),
        }

    @property
    def seller_cap_stage(self) -> str:
        return f"seller_cap_top{self.category_cap_head}"


@dataclass
class Candidates:
    """Per-user slot arrays that every rule permutes together (row r belongs to ``users[r]``)."""

    ranked: np.ndarray  # users x width item indices, -1 = empty
    scores: np.ndarray
    source: np.ndarray  # MODEL or POPULAR per slot

    def reorder(self, order: np.ndarray) -> None:
        """Apply one per-row slot order (from a rule) to items, scores and sources alike."""
        for name in ("ranked", "scores", "source"):
            setattr(self, name, np.take_along_axis(getattr(self, name), order, axis=1))

    def head(self, width: int) -> Candidates:
        return Candidates(self.ranked[:, :width], self.scores[:, :width], self.source[:, :width])

    def copy(self) -> Candidates:
        return Candidates(self.ranked.copy(), self.scores.copy(), self.source.copy())


# The trace's scoring stages: the model's ranking before any rule, then without the items the user
# must not get back (seen, purchased), then also without blocked and out-of-stock items.
UNFILTERED = "model_unfiltered"
EXCLUDE_SEEN = "exclude_seen_items"
EXCLUDE_CATALOG = "exclude_blocked_and_out_of_stock_items"
CALIBRATION = "calibrated_reranking"


@dataclass
class ListTrace:
    """The slots after each rule of :func:`ranked_lists`, in order, so a caller can tell what each rule changed.

    ``recforge diagnose`` passes one to explain a single user's list: comparing consecutive stages
    names the rule that removed or pushed down an item, from the very code that builds the lists
    (nothing re-implements the rules). Stage names are those of :meth:`ListRules.manifest` where a
    rule has one; the scoring pass, which applies the exclusions all at once, is traced as three
    stages (``UNFILTERED``, ``EXCLUDE_SEEN``, ``EXCLUDE_CATALOG``) at the cost of two extra scoring
    passes, so publication and evaluation pass no trace.
    """

    stages: list[tuple[str, Candidates]] = field(default_factory=list)

    def record(self, stage: str, candidates: Candidates) -> None:
        self.stages.append((stage, candidates.copy()))


def ranked_lists(
    model: Recommender,
    users: np.ndarray,
    rules: ListRules,
    allowed: np.ndarray,
    categories: np.ndarray,
    excluded: sp.csr_matrix | None = None,
    trace: ListTrace | None = None,
    sellers: np.ndarray | None = None,
) -> Candidates:
    """Top `rules.top_n` slots for each of `users` (indices into ``model.user_ids``) after every rule.

    `allowed` masks the items that may be recommended (in stock, not blocked), `categories` holds
    an integer category code per item, and `excluded` the items each user must never get back
    (default: the model's training interactions; publication adds purchases made since).
    `trace`, if given, receives the slots after each rule (see :class:`ListTrace`). `sellers` holds a
    seller code per item (-1 = none; None: the catalog has no sellers, so the seller cap has nothing to hold).
    """
    users = np.asarray(users, dtype=np.int64)
    excluded = model.seen.tocsr() if excluded is None else excluded
    depth = min(len(model.item_ids), rules.top_n + rules.candidate_margin)
    if trace is not None:
        for stage, passes in ((UNFILTERED, {"filter_seen": False}), (EXCLUDE_SEEN, {"seen": excluded})):
            stage_ranked, stage_scores = model.recommend(users, depth, **passes)
            trace.record(stage, Candidates(stage_ranked, stage_scores, np.full(stage_ranked.shape, MODEL, np.int8)))
    ranked, scores = model.recommend(users, depth, allowed_items=allowed, seen=excluded)
    candidates = Candidates(ranked, scores, np.full(ranked.shape, MODEL, dtype=np.int8))
    if trace is not None:
        trace.record(EXCLUDE_CATALOG, candidates)
    cold = blend_cold_users(model, users, candidates, excluded, allowed, categories, rules)
    if trace is not None:
        trace.record("cold_user_popularity_blend", candidates)
    if rules.mmr_enabled:
        candidates.reorder(mmr_order(candidates.ranked, candidates.scores, item_vectors(model), rules.mmr_lambda))
        if trace is not None:
            trace.record("mmr_diversity", candidates)
    if rules.calibration_lambda > 0:
        target = category_mix(model.seen.tocsr()[users], categories, int(categories.max(initial=0)) + 1)
        order = calibrated_order(
            candidates.ranked, candidates.scores, target, categories, rules.calibration_lambda,
            rules.category_cap_head,
        )  # fmt: skip
        candidates.reorder(order)
        if trace is not None:
            trace.record(CALIBRATION, candidates)
    seller_caps = seller_cap_of(rules, sellers)
    if seller_caps:
        candidates.reorder(capped_order(candidates.ranked, seller_caps, rules.category_cap_head))
        if trace is not None:
            trace.record(rules.seller_cap_stage, candidates)
    apply_category_cap(model, users, candidates, excluded, allowed, categories, rules, sellers)
    if trace is not None:
        trace.record(f"category_cap_top{rules.category_cap_head}", candidates)
    log.debug("ranked lists: %d users (%d cold, blended with popularity), mmr=%s", len(users), cold, rules.mmr_enabled)
    return candidates.head(rules.top_n)


def seller_cap_of(rules: ListRules, sellers: np.ndarray | None) -> list[tuple[np.ndarray, int]]:
    """The seller cap as a ``capped_order`` cap, or none when it is off or the catalog has no sellers."""
    if rules.seller_cap <= 0 or sellers is None:
        return []
    return [(sellers, rules.seller_cap)]


def cold_users(model: Recommender, users: np.ndarray, rules: ListRules) -> np.ndarray:
    """Mask over `users`: fewer than `cold_user_below` distinct training items."""
    return np.diff(model.seen.tocsr().indptr)[users] < rules.cold_user_below


def blend_cold_users(
    model: Recommender,
    users: np.ndarray,
    candidates: Candidates,
    excluded: sp.csr_matrix,
    allowed: np.ndarray,
    categories: np.ndarray,
    rules: ListRules,
) -> int:
    """Replace the lists of cold users by the model x in-category popularity blend; returns how many."""
    cold_rows = np.flatnonzero(cold_users(model, users, rules))
    if not len(cold_rows):
        return 0
    seen = model.seen.tocsr()
    popularity = distinct_users_per_item(seen)
    popular_items = np.argsort(-popularity, kind="stable")
    order = PopularityOrder.of(popular_items[allowed[popular_items]], categories)
    width = candidates.ranked.shape[1]
    for row in cold_rows:
        user = users[row]
        never_again = excluded.indices[excluded.indptr[user] : excluded.indptr[user + 1]]
        history = seen.indices[seen.indptr[user] : seen.indptr[user + 1]]
        own = np.unique(categories[history]) if len(history) else None
        items, scores, from_popularity = popularity_blend(
            candidates.ranked[row],
            candidates.scores[row],
            history,
            order.first(own, np.concatenate([never_again, history]), width),
            popularity,
            categories,
            rules.cold_popularity_weight,
            width,
        )
        candidates.ranked[row], candidates.scores[row] = items, scores
        candidates.source[row] = np.where(from_popularity, POPULAR, MODEL)
    return len(cold_rows)


@dataclass(frozen=True)
class PopularityOrder:
    """The allowed items by descending popularity, overall and per category, built once per list run.

    A cold user's popularity candidates are the first `width` items of the user's categories (every
    category for a user without history) that the user has not seen and may not get again. Filtering
    the whole popularity order for each user cost ~1-2 ms (about 1 ms of `np.isin` over a growing
    prefix, and a `np.unique` over all 100k items' categories for a user without history): minutes at
    a million users (a tenth of them cold in the scale benchmark), and most of a tuning trial's time.
    Per category only its first ``width + len(skip)`` items can be among the answer, so that is all
    that is read.
    """

    items: np.ndarray  # allowed items, most popular first (ties by item index)
    rank: np.ndarray  # rank[item]: its place in `items` (len(categories) entries; unallowed items never asked)
    by_category: dict[int, np.ndarray]  # category code -> its items of `items`, in the same order

    @classmethod
    def of(cls, popular_items: np.ndarray, categories: np.ndarray) -> PopularityOrder:
        rank = np.zeros(len(categories), dtype=np.int64)
        rank[popular_items] = np.arange(len(popular_items))
        codes = categories[popular_items]
        grouped = np.argsort(codes, kind="stable")  # stable: each category keeps the popularity order
        present, starts = np.unique(codes[grouped], return_index=True)
        groups = np.split(popular_items[grouped], starts[1:]) if len(present) else []
        return cls(popular_items, rank, dict(zip(present.tolist(), groups, strict=True)))

    def first(self, own: np.ndarray | None, skip: np.ndarray, width: int) -> np.ndarray:
        """The first `width` items of the categories `own` (None: all of them) that are not in `skip`, in order."""
        need = width + len(skip)
        if own is None:
            picked = self.items[:need]
        else:
            parts = [self.by_category[code][:need] for code in own.tolist() if code in self.by_category]
            picked = np.concatenate(parts) if parts else self.items[:0]
            if len(parts) > 1:  # the categories' items back into one popularity order
                picked = picked[np.argsort(self.rank[picked], kind="stable")]
        if len(skip):
            picked = picked[~np.isin(picked, skip)]
        return picked[:width]


def apply_category_cap(
    model: Recommender,
    users: np.ndarray,
    candidates: Candidates,
    excluded: sp.csr_matrix,
    allowed: np.ndarray,
    categories: np.ndarray,
    rules: ListRules,
    sellers: np.ndarray | None = None,
) -> None:
    """Enforce the category cap and the seller cap; users whose candidates are too uniform get deeper items first.

    Deeper means 4x the candidates, then 32x, then the whole catalog, for the users still short (at a
    million users x 100k items about 1% of users were still short after 4x, and sorting the whole
    catalog for each of them was a fifth of publication's time; 32x leaves few). For a row
    in the model's order a deeper stage changes nothing once the head is full, as the greedy capped
    order only looks further down: every stage gives the slots a whole-catalog ranking would, at a
    fraction of the cost.
    """
    head = rules.category_cap_head
    seller_caps = seller_cap_of(rules, sellers)
    # Prepared once for the batch and every deeper row below (each would stack the item codes again).
    caps = PreparedCaps.of([(categories, rules.per_category), *seller_caps])
    if not seller_caps:  # the category cap alone: its own walk
        candidates.reorder(category_capped_order(candidates.ranked, categories, rules.category_cap, head))
    else:
        candidates.reorder(capped_order(candidates.ranked, caps, head))
    short = np.flatnonzero(~head_within_caps(candidates.ranked, caps, head))
    width, n_items = candidates.ranked.shape[1], len(model.item_ids)
    for deeper in sorted({min(n_items, 4 * width), min(n_items, 32 * width), n_items}):
        if not len(short) or deeper <= width:
            continue
        deep, deep_scores = model.recommend(users[short], deeper, allowed_items=allowed, seen=excluded)
        for deep_row, row in enumerate(short):
            _extend_and_cap(candidates, row, deep[deep_row], deep_scores[deep_row], caps, head)
        short = short[~head_within_caps(candidates.ranked[short], caps, head)]


def _extend_and_cap(candidates: Candidates, row: int, deep, deep_scores, caps, head: int) -> None:
    """One row: its candidates, then the deeper model items it lacks, in capped order, cut to the width."""
    width = candidates.ranked.shape[1]
    present = candidates.ranked[row] >= 0
    fresh = (deep >= 0) & ~np.isin(deep, candidates.ranked[row])
    extended = np.concatenate([candidates.ranked[row][present], deep[fresh]])
    extended_scores = np.concatenate([candidates.scores[row][present], deep_scores[fresh]])
    extended_source = np.concatenate([candidates.source[row][present], np.full(fresh.sum(), MODEL, dtype=np.int8)])
    order = capped_order(extended[None, :], caps, head)[0][:width]
    filled = len(order)
    candidates.ranked[row, :filled], candidates.ranked[row, filled:] = extended[order], -1
    candidates.scores[row, :filled], candidates.scores[row, filled:] = extended_scores[order], -np.inf
    candidates.source[row, :filled], candidates.source[row, filled:] = extended_source[order], MODEL


def item_vectors(model: Recommender) -> np.ndarray:
    """Embeddings for the similar-items index and MMR: the model's own, else an SVD of item co-occurrence."""
    if model.item_embeddings is not None:
        return np.asarray(model.item_embeddings, dtype=np.float32)
    from scipy.sparse.linalg import svds

    dims = max(1, min(32, min(model.seen.shape) - 1))
    _, s, vt = svds(model.seen.astype(np.float32), k=dims)
    return (vt.T * s).astype(np.float32)
