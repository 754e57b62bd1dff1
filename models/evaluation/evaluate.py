"""Score one fitted model on one fold: the lists users would get, then every metric on them.

Two views of the same model. ``rules``: the lists after publication's business rules, built by
the function publication stores (:func:`models.lists.ranked.ranked_lists`: seen, out-of-stock and
blocked items out, the cold-user popularity blend, MMR if enabled, the category cap on the first ``category_cap_head``;
users unknown to training get the capped popularity fallback), i.e. what users are served and what
promotion decides on. ``raw``:
the model's own ranking with only seen items filtered, to show what the rules cost or gain.

Beside the usual metrics, both views get the bias audit's (``models.evaluation.exposure``): exposure
Gini, long-tail share and Steck's calibration KL (also per segment); the rules view keeps the
per-user numbers the audit page needs (:class:`FoldAudit`).

Every metric is reported overall, per activity segment (``segment.<name>.<metric>``) and on new
items (``new_items.<metric>``: held-out interactions restricted to new items, over the users who
have one). Everything is array work over all users at once, batched by ``Recommender.recommend``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.evaluation.exposure import calibration_kl, exposure_gini, long_tail_share
from models.evaluation.segments import SegmentBounds, history_sizes, new_item_relevance, segment_masks
from models.evaluation.splits import Fold
from models.lists.ranked import ListRules, ranked_lists
from models.lists.rules import allowed_and_categories, catalog_status, popularity_fallback, seller_codes
from models.metrics import (
    CatalogStats,
    MetricNames,
    at,
    calc_metrics,
    hits_matrix,
    in_segment,
    ndcg_at_k,
    standard_errors,
)
from models.popularity import distinct_users_per_item

VIEWS = ("rules", "raw")
RAW_PREFIX = "raw."
LONG_TAIL_BINS = 10


@dataclass(frozen=True)
class EvaluationConfig:
    """What to measure and how lists are built (publication's rules); pipelines fill it from settings."""

    k: int = 10
    recall_k: int = 50
    rules: ListRules = field(default_factory=ListRules)
    head_share: float = 0.01
    segments: SegmentBounds = field(default_factory=SegmentBounds)

    def __post_init__(self):
        if self.k < 1 or self.recall_k < 1:
            raise ValueError(f"metric cut-offs must be >= 1, got k={self.k}, recall_k={self.recall_k}")
        if self.depth > self.rules.top_n:
            raise ValueError(
                f"evaluation scores the top {self.depth} (max of k and recall_k) but publication stores only "
                f"the top {self.rules.top_n} (publish_top_n): the scored lists would not be the published ones"
            )

    @property
    def names(self) -> MetricNames:
        """The metric names at these cut-offs, for every stage that reads the scores."""
        return MetricNames(self.k, self.recall_k)

    @property
    def depth(self) -> int:
        return max(self.k, self.recall_k)


@dataclass
class FoldAudit:
    """What the bias audit needs of one fold's rules-view lists, per evaluated user and per item.

    Per user (rows = the fold's evaluated users): the top k, NDCG@k (NaN without a held-out item),
    calibration KL (NaN without history) and activity segment. Per item (the fold's training items):
    popularity, allowed, category name, seller name ("" when unknown).
    """

    recommended: np.ndarray
    ndcg: np.ndarray
    calibration: np.ndarray
    segments: np.ndarray
    popularity: np.ndarray
    allowed: np.ndarray
    categories: np.ndarray
    sellers: np.ndarray


@dataclass
class FoldScore:
    """Metrics of one model on one fold (raw view prefixed ``raw.``), its long-tail exposure per view, its audit.

    ``standard_errors``: each accuracy metric's standard error over the scored users (rules view,
    overall and per segment, keys ``<metric>_se``); ``eval_user_share``: the share of the fold's test
    users that were scored (below 1 when the fold is a seeded sample, ``Fold.sample_users``).
    """

    fold: str
    metrics: dict[str, float]
    exposure: dict[str, np.ndarray]
    audit: FoldAudit | None = None
    standard_errors: dict[str, float] = field(default_factory=dict)
    eval_user_share: float = 1.0


def fold_lists(model, fold: Fold, catalog: pd.DataFrame, config: EvaluationConfig) -> dict[str, np.ndarray]:
    """Top-`depth` item indices for every evaluated user of the fold, per view (-1 = empty slot)."""
    allowed, categories = allowed_and_categories(model.item_ids, catalog)
    sellers = seller_codes(model.item_ids, catalog)
    return _lists(model, fold, allowed, categories, item_popularity(fold, len(model.item_ids)), config, sellers)


def _lists(
    model, fold: Fold, allowed, categories, popularity, config: EvaluationConfig, sellers=None
) -> dict[str, np.ndarray]:
    rules = config.rules
    known = fold.train_rows >= 0
    lists = {}
    for view in VIEWS:
        out = np.full((fold.n_eval_users, config.depth), -1, dtype=np.int64)
        if view == "rules":
            if known.any():
                rows = fold.train_rows[known]
                ranked = ranked_lists(model, rows, rules, allowed, categories, sellers=sellers).ranked
                ranked = ranked[:, : config.depth]
                out[known, : ranked.shape[1]] = ranked  # a catalog smaller than depth leaves -1 slots
            cap, head = rules.category_cap, rules.category_cap_head
            fallback = popularity_fallback(popularity, config.depth, allowed, categories, cap, head)
        else:
            if known.any():
                ranked = model.recommend(fold.train_rows[known], config.depth)[0]
                out[known, : ranked.shape[1]] = ranked
            fallback = popularity_fallback(popularity, config.depth, None, None, None)
        out[~known] = fallback
        lists[view] = out
    return lists


def item_popularity(fold: Fold, n_items: int | None = None) -> np.ndarray:
    """Distinct training users per item: what 'popular' means for novelty, the head and the fallback.

    ``n_items``: the model's item count, when it knows items beyond training's (they have no users).
    """
    popularity = distinct_users_per_item(fold.train.matrix).astype(np.float64)
    n_items = len(popularity) if n_items is None else n_items
    return np.concatenate([popularity, np.zeros(n_items - len(popularity))])


def score_fold(model, fold: Fold, catalog: pd.DataFrame, config: EvaluationConfig) -> FoldScore:
    """Lists for every evaluated user, then overall, per-segment and new-item metrics for both views."""
    allowed, categories = allowed_and_categories(model.item_ids, catalog)
    sellers = seller_codes(model.item_ids, catalog)
    popularity = item_popularity(fold, len(model.item_ids))
    lists = _lists(model, fold, allowed, categories, popularity, config, sellers)
    masks = segment_masks(fold, config.segments)
    # A content model knows items beyond training's: its indices address a re-ordered held-out matrix.
    relevant, new_columns = fold.columns_for(model.item_ids)
    new_relevant = new_item_relevance(fold, relevant, new_columns)
    history = fold_histories(fold, len(model.item_ids))
    metrics: dict[str, float] = {}
    exposure = {}
    audit = None
    errors: dict[str, float] = {}
    for view, recommended in lists.items():
        stats = CatalogStats(
            categories=categories,
            popularity=popularity,
            n_users=fold.train.n_users,
            eligible=allowed if view == "rules" else None,
            is_new=new_columns[: len(model.item_ids)],
            head_share=config.head_share,
        )
        prefix = "" if view == "rules" else RAW_PREFIX
        metrics.update(_prefixed(prefix, _calc(recommended, relevant, config, stats)))
        for segment, mask in masks.items():
            values = _calc(recommended[mask], relevant[mask], config, stats)
            metrics.update(_prefixed(prefix + in_segment(segment, ""), values))
        metrics.update(_prefixed(f"{prefix}new_items.", _calc(recommended, new_relevant, config, stats)))
        exposure[view] = long_tail_exposure(recommended, popularity, config.k)
        kl = calibration_kl(recommended, history, categories, config.k)
        metrics.update(_prefixed(prefix, bias_metrics(recommended, kl, allowed, popularity, config)))
        for segment, mask in masks.items():
            metrics[prefix + in_segment(segment, config.names.calibration_kl)] = _nanmean(kl[mask])
        if view == "rules":
            audit = fold_audit(recommended, kl, fold, model.item_ids, relevant, catalog, allowed, popularity, config)
            errors.update(_standard_errors(recommended, relevant, config))
            for segment, mask in masks.items():
                values = _standard_errors(recommended[mask], relevant[mask], config)
                errors.update(_prefixed(in_segment(segment, ""), values))
    share = fold.n_eval_users / fold.population_users if fold.population_users else 1.0
    return FoldScore(fold.name, metrics, exposure, audit, errors, share)


def fold_histories(fold: Fold, n_items: int) -> sp.csr_matrix:
    """Each evaluated user's training row, `n_items` wide (empty for users unknown to training): calibration's target.

    A content model's items go beyond training's (after them), which no history can hold: they get empty columns.
    """
    known = (fold.train_rows >= 0).astype(np.float64)
    rows = fold.train.matrix.tocsr()[np.maximum(fold.train_rows, 0)]
    if n_items > rows.shape[1]:
        rows = sp.hstack([rows, sp.csr_matrix((rows.shape[0], n_items - rows.shape[1]))]).tocsr()
    return (sp.diags(known) @ rows).tocsr()


def bias_metrics(recommended, kl, allowed, popularity, config: EvaluationConfig) -> dict[str, float]:
    """Exposure Gini over the allowed items, long-tail share (and the tail's interaction share), mean calibration KL."""
    names = config.names
    shown, interactions = long_tail_share(recommended, popularity, config.k)
    return {
        names.exposure_gini: exposure_gini(recommended, config.k, allowed),
        names.long_tail_share: shown,
        at("long_tail_interaction_share", config.k): interactions,
        names.calibration_kl: _nanmean(kl),
    }


def fold_audit(recommended, kl, fold: Fold, item_ids, relevant, catalog, allowed, popularity, config) -> FoldAudit:
    """The per-user and per-item numbers of one fold's rules-view lists that the bias audit page reads."""
    hits = hits_matrix(recommended[:, : config.k], relevant)
    n_relevant = np.asarray((relevant > 0).sum(axis=1)).ravel()
    ndcg = np.where(n_relevant > 0, ndcg_at_k(hits, n_relevant, config.k), np.nan)
    _, category_names = catalog_status(item_ids, catalog)
    seller_names = np.full(len(item_ids), "", dtype=object)
    if "seller" in catalog.columns:
        named = catalog.set_index("item_id").reindex(item_ids)["seller"]
        seller_names = named.fillna("").astype(str).to_numpy(dtype=object)
    return FoldAudit(
        recommended=recommended[:, : config.k].copy(),
        ndcg=ndcg,
        calibration=kl,
        segments=config.segments.label(history_sizes(fold)),
        popularity=popularity,
        allowed=allowed,
        categories=category_names,
        sellers=seller_names,
    )


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else 0.0


def _calc(recommended, relevant, config: EvaluationConfig, stats: CatalogStats) -> dict[str, float]:
    return calc_metrics(recommended, relevant, config.k, config.recall_k, k=config.k, catalog=stats)


def _standard_errors(recommended, relevant, config: EvaluationConfig) -> dict[str, float]:
    return standard_errors(recommended, relevant, config.k, config.recall_k, k=config.k)


def _prefixed(prefix: str, values: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}{key}": float(value) for key, value in values.items()}


def long_tail_exposure(recommended: np.ndarray, popularity: np.ndarray, k: int, bins: int = LONG_TAIL_BINS):
    """Share of top-k slots per popularity decile of the catalog (decile 0 = the most popular tenth).

    A model that serves only the head puts nearly everything in decile 0; the long tail is the rest.
    """
    order = np.argsort(-popularity, kind="stable")
    decile = np.empty(len(popularity), dtype=np.int64)
    decile[order] = np.arange(len(popularity)) * bins // max(len(popularity), 1)
    top = recommended[:, :k]
    filled = top[top >= 0]
    counts = np.bincount(decile[filled], minlength=bins).astype(np.float64)
    return counts / counts.sum() if counts.sum() else counts
