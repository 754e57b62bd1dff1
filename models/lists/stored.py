"""The lists a publication stores: the champion's top N per known user after the business rules.

The rules themselves (exclusions, cold-user blend, MMR, category cap) are applied by
:func:`models.lists.ranked.ranked_lists`, the same function offline evaluation scores, so the
published lists are the evaluated ones. This module adds what only publication needs: purchases
made since the model's snapshot as further exclusions, a reason per item, the DataFrames the
publication writes, and the fallback list for unknown users.

Reasons: ``popular`` (the item came from the popularity side of a cold blend, or the champion is
the popularity model), ``similar_to:<item>`` (the user's own history item that is closest to it by
the model's item embeddings, when that cosine reaches `reason_min_similarity`), else ``model``.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.base import Recommender
from models.columns import Columns
from models.lists.ranked import MODEL, POPULAR, Candidates, ListRules, cold_users, ranked_lists
from models.lists.rules import allowed_and_categories, history_anchors, popularity_fallback, seller_codes
from models.popularity import distinct_users_per_item

log = logging.getLogger(__name__)


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


def reasons(
    model: Recommender,
    candidates: Candidates,
    item_ids: np.ndarray,
    rules: ListRules,
    users: np.ndarray | None = None,
) -> np.ndarray:
    """The reason string of every slot (see the module docstring for when each applies).

    Row r of `candidates` belongs to ``users[r]`` (indices into ``model.user_ids``; default: every
    user in order, as publication builds them).
    """
    reason = np.where(candidates.source == POPULAR, "popular", "model").astype(object)
    if model.name == "popularity":
        reason[:] = "popular"
        return reason
    vectors = model.item_embeddings
    if vectors is None:
        return reason
    seen = model.seen
    users = np.arange(seen.shape[0]) if users is None else np.asarray(users, dtype=np.int64)
    histories = [seen.indices[seen.indptr[u] : seen.indptr[u + 1]] for u in users]
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
    top = ranked_lists(model, users, rules, allowed, categories, excluded, sellers=seller_codes(model.item_ids, items))
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
    cold = int(cold_users(model, users, rules).sum())
    log.info("lists: %d users (%d cold, blended with popularity), mmr=%s", len(users), cold, rules.mmr_enabled)
    return user_recs, fallback_list(model, allowed, categories, rules)


def fallback_list(model: Recommender, allowed: np.ndarray, categories: np.ndarray, rules: ListRules) -> pd.DataFrame:
    """The list for users the publication does not know: most popular allowed items, category-capped."""
    popularity = distinct_users_per_item(model.seen)
    top = popularity_fallback(popularity, rules.top_n, allowed, categories, rules.category_cap, rules.category_cap_head)
    top = top[top >= 0]
    return pd.DataFrame(
        {
            Columns.Rank: np.arange(1, len(top) + 1, dtype=np.int16),
            Columns.Item: model.item_ids[top].astype(str),
            Columns.Score: popularity[top],
            Columns.Reason: "popular",
        }
    )
