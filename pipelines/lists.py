"""The lists a publication stores: the champion's top N per known user after the business rules.

Order of the rules, per user (all on one candidate array of top N + margin, so each rule can
promote items from below the cut):

1. hard exclusions while scoring: items the user has seen (purchased, rated, ...), blocked and
   out-of-stock items are never candidates;
2. cold users (fewer than `cold_user_max_items` distinct items) get the model blended with
   popularity within their categories;
3. optional MMR diversity re-ranking;
4. the category cap on the first 10 slots (a hard rule, so it comes last and wins);
5. a reason per item: ``popular`` (it came from the popularity side of a cold blend, or the
   champion is the popularity model), ``similar_to:<item>`` (the user's own history item that is
   closest to it by the model's item embeddings, when that cosine reaches
   `reason_min_similarity`), else ``model``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.base import Recommender
from models.business_rules import (
    allowed_and_categories,
    category_capped_order,
    head_within_cap,
    history_anchors,
    mmr_order,
    popularity_blend,
)
from models.columns import Columns
from models.popularity import distinct_users_per_item
from pipelines.settings import Settings

log = logging.getLogger(__name__)

MODEL, POPULAR = 0, 1  # where a slot's item came from


@dataclass(frozen=True)
class ListRules:
    """The rules a publication applies, exactly as recorded in its manifest."""

    top_n: int
    candidate_margin: int
    category_cap: float
    category_cap_head: int
    cold_user_max_items: int
    cold_popularity_weight: float
    mmr_enabled: bool
    mmr_lambda: float
    reason_min_similarity: float

    @classmethod
    def from_settings(cls, settings: Settings) -> ListRules:
        return cls(
            top_n=settings.publish_top_n,
            candidate_margin=settings.publish_candidate_margin,
            category_cap=settings.category_cap,
            category_cap_head=10,
            cold_user_max_items=settings.cold_user_max_items,
            cold_popularity_weight=settings.cold_popularity_weight,
            mmr_enabled=settings.mmr_enabled,
            mmr_lambda=settings.mmr_lambda,
            reason_min_similarity=settings.reason_min_similarity,
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
                "category_cap_top10",
                "reasons",
            ],
            "parameters": asdict(self),
        }


@dataclass
class Candidates:
    """Per-user slot arrays that every rule permutes together."""

    ranked: np.ndarray  # users x width item indices, -1 = empty
    scores: np.ndarray
    source: np.ndarray  # MODEL or POPULAR per slot

    def reorder(self, order: np.ndarray) -> None:
        """Apply one per-row slot order (from a rule) to items, scores and sources alike."""
        for name in ("ranked", "scores", "source"):
            setattr(self, name, np.take_along_axis(getattr(self, name), order, axis=1))


def excluded_matrix(model: Recommender, purchased: pd.DataFrame | None) -> sp.csr_matrix:
    """What each user must never get back: the training interactions plus every purchase or rating."""
    seen = model.seen.tocsr().astype(np.float32)
    if purchased is None or purchased.empty:
        return seen
    rows = pd.Index(model.user_ids).get_indexer(purchased[Columns.User])
    cols = pd.Index(model.item_ids).get_indexer(purchased[Columns.Item])
    keep = (rows >= 0) & (cols >= 0)
    bought = sp.csr_matrix((np.ones(keep.sum(), dtype=np.float32), (rows[keep], cols[keep])), shape=seen.shape)
    return ((seen + bought) > 0).astype(np.float32).tocsr()


def item_popularity(model: Recommender) -> np.ndarray:
    """Distinct users per item: one heavy user cannot make an item popular."""
    return distinct_users_per_item(model.seen)


def blend_cold_users(
    model: Recommender,
    candidates: Candidates,
    excluded: sp.csr_matrix,
    allowed: np.ndarray,
    categories: np.ndarray,
    rules: ListRules,
) -> int:
    """Replace the lists of cold users by the model x in-category popularity blend; returns how many."""
    distinct = np.diff(model.seen.indptr)
    cold = np.flatnonzero(distinct < rules.cold_user_max_items)
    popularity = item_popularity(model)
    popular_items = np.argsort(-popularity, kind="stable")
    popular_items = popular_items[allowed[popular_items]]
    width = candidates.ranked.shape[1]
    for user in cold:
        items, scores, from_popularity = popularity_blend(
            candidates.ranked[user],
            candidates.scores[user],
            model.seen.indices[model.seen.indptr[user] : model.seen.indptr[user + 1]],
            popular_items[~np.isin(popular_items, excluded.indices[excluded.indptr[user] : excluded.indptr[user + 1]])],
            popularity,
            categories,
            rules.cold_popularity_weight,
            width,
        )
        candidates.ranked[user], candidates.scores[user] = items, scores
        candidates.source[user] = np.where(from_popularity, POPULAR, MODEL)
    return len(cold)


def apply_category_cap(
    model: Recommender,
    candidates: Candidates,
    excluded: sp.csr_matrix,
    allowed: np.ndarray,
    categories: np.ndarray,
    rules: ListRules,
) -> None:
    """Enforce the cap; users whose candidates are too uniform get deeper model items appended first."""
    head = rules.category_cap_head
    candidates.reorder(category_capped_order(candidates.ranked, categories, rules.category_cap, head))
    short = np.flatnonzero(~head_within_cap(candidates.ranked, categories, rules.category_cap, head))
    width, n_items = candidates.ranked.shape[1], len(model.item_ids)
    if not len(short) or width >= n_items:
        return
    deep, deep_scores = model.recommend(short, n_items, allowed_items=allowed, seen=excluded)
    for row, user in enumerate(short):
        present = candidates.ranked[user] >= 0
        fresh = (deep[row] >= 0) & ~np.isin(deep[row], candidates.ranked[user])
        extended = np.concatenate([candidates.ranked[user][present], deep[row][fresh]])
        extended_scores = np.concatenate([candidates.scores[user][present], deep_scores[row][fresh]])
        extended_source = np.concatenate([candidates.source[user][present], np.full(fresh.sum(), MODEL)])
        order = category_capped_order(extended[None, :], categories, rules.category_cap, head)[0][:width]
        filled = len(order)
        candidates.ranked[user, :filled], candidates.ranked[user, filled:] = extended[order], -1
        candidates.scores[user, :filled], candidates.scores[user, filled:] = extended_scores[order], -np.inf
        candidates.source[user, :filled], candidates.source[user, filled:] = extended_source[order], MODEL


def reasons(model: Recommender, candidates: Candidates, item_ids: np.ndarray, rules: ListRules) -> np.ndarray:
    """The reason string of every slot (see the module docstring for when each applies)."""
    reason = np.where(candidates.source == POPULAR, "popular", "model").astype(object)
    if model.name == "popularity":
        reason[:] = "popular"
        return reason
    vectors = model.item_embeddings
    if vectors is None:
        return reason
    seen = model.seen
    histories = [seen.indices[seen.indptr[u] : seen.indptr[u + 1]] for u in range(seen.shape[0])]
    anchors = history_anchors(candidates.ranked, histories, vectors, rules.reason_min_similarity)
    explained = (anchors >= 0) & (candidates.source == MODEL)
    reason[explained] = "similar_to:" + item_ids[anchors[explained]].astype(str).astype(object)
    return reason


def build_lists(
    model: Recommender, items: pd.DataFrame, rules: ListRules, purchased: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Top-N per known user and the popularity fallback, both after the business rules."""
    allowed, categories = allowed_and_categories(model.item_ids, items)
    excluded = excluded_matrix(model, purchased)

    users = np.arange(len(model.user_ids))
    depth = min(len(model.item_ids), rules.top_n + rules.candidate_margin)
    ranked, scores = model.recommend(users, depth, allowed_items=allowed, seen=excluded)
    candidates = Candidates(ranked, scores, np.full(ranked.shape, MODEL, dtype=np.int8))
    cold = blend_cold_users(model, candidates, excluded, allowed, categories, rules)
    if rules.mmr_enabled:
        candidates.reorder(mmr_order(candidates.ranked, candidates.scores, item_vectors(model), rules.mmr_lambda))
    apply_category_cap(model, candidates, excluded, allowed, categories, rules)
    top = Candidates(
        candidates.ranked[:, : rules.top_n], candidates.scores[:, : rules.top_n], candidates.source[:, : rules.top_n]
    )
    reason = reasons(model, top, model.item_ids, rules)

    rows, ranks = np.nonzero(top.ranked >= 0)
    user_recs = pd.DataFrame(
        {
            Columns.User: model.user_ids[rows].astype(str),
            Columns.Rank: (ranks + 1).astype(np.int16),
            Columns.Item: model.item_ids[top.ranked[rows, ranks]].astype(str),
            Columns.Score: top.scores[rows, ranks].astype(np.float32),
            Columns.Reason: reason[rows, ranks].astype(str),
        }
    )
    log.info("lists: %d users (%d cold, blended with popularity), mmr=%s", len(users), cold, rules.mmr_enabled)
    return user_recs, popularity_fallback(model, allowed, categories, rules)


def popularity_fallback(
    model: Recommender, allowed: np.ndarray, categories: np.ndarray, rules: ListRules
) -> pd.DataFrame:
    """The list for users the publication does not know: most popular allowed items, category-capped."""
    popularity = item_popularity(model)
    popularity[~allowed] = -np.inf
    top = np.argsort(-popularity, kind="stable")
    top = top[np.isfinite(popularity[top])]
    top = top[category_capped_order(top[None, :], categories, rules.category_cap, rules.category_cap_head)[0]]
    top = top[: rules.top_n]
    return pd.DataFrame(
        {
            Columns.Rank: np.arange(1, len(top) + 1, dtype=np.int16),
            Columns.Item: model.item_ids[top].astype(str),
            Columns.Score: popularity[top],
            Columns.Reason: "popular",
        }
    )


def item_vectors(model: Recommender) -> np.ndarray:
    """Embeddings for the similar-items index and MMR: the model's own, else an SVD of item co-occurrence."""
    if model.item_embeddings is not None:
        return np.asarray(model.item_embeddings, dtype=np.float32)
    from scipy.sparse.linalg import svds

    dims = max(1, min(32, min(model.seen.shape) - 1))
    _, s, vt = svds(model.seen.astype(np.float32), k=dims)
    return (vt.T * s).astype(np.float32)
