"""Why one user's list missed (or hit) the items they went on to interact with.

Given models fitted on one fold's training data, this follows a user's held-out items through
the three places a recommendation can be lost, in the order a list is made:

1. **candidate generation**: no generator proposes any of them within its top ``depth``;
2. **ranking**: some generator proposes one, but the final model ranks all of them below ``k``
   (seen items filtered, no other rule yet: evaluation's ``raw`` view);
3. **rules**: one is within the top ``k`` before the business rules, but a rule (blocked,
   out-of-stock, the cold-user blend, MMR, the category cap) takes it out of the top ``k``;

and otherwise **none**: a held-out item is in the final top ``k`` (a hit). The rules are those of
:func:`models.lists.ranked.ranked_lists`, run with a :class:`~models.lists.ranked.ListTrace`, so
what a rule removed is read off the real list-building code, not re-derived. Pure numpy, no I/O:
``pipelines/training/diagnose.py`` loads the models and data and writes the reports.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from models.base import Recommender
from models.evaluation.splits import Fold
from models.lists.ranked import (
    CALIBRATION,
    EXCLUDE_CATALOG,
    EXCLUDE_SEEN,
    ListRules,
    ListTrace,
    cold_users,
    ranked_lists,
)
from models.lists.stored import reasons

CANDIDATE_GENERATION, RANKING, RULES, NONE = "candidate generation", "ranking", "rules", "none"
OUTCOMES = (CANDIDATE_GENERATION, RANKING, RULES, NONE)
FALLBACK = "fallback"  # an unknown user: no personal list to diagnose


@dataclass(frozen=True)
class ScoreSpread:
    """How spread out a generator's top scores are: a flat head means its order there is close to noise."""

    n: int
    max: float | None
    min: float | None
    q25: float | None
    median: float | None
    q75: float | None
    gap_1_k: float | None  # score at rank 1 minus score at rank k (None with fewer than k scores)


def score_spread(scores: np.ndarray, k: int) -> ScoreSpread:
    """Spread of the finite scores of a ranked list (best first)."""
    finite = np.asarray(scores, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if not len(finite):
        return ScoreSpread(0, None, None, None, None, None, None)
    q25, median, q75 = (float(q) for q in np.quantile(finite, [0.25, 0.5, 0.75]))
    gap = float(finite[0] - finite[k - 1]) if len(finite) >= k else None
    return ScoreSpread(len(finite), float(finite.max()), float(finite.min()), q25, median, q75, gap)


@dataclass
class GeneratorView:
    """One ranking of the whole catalog for the user: its top ``depth`` and where each target landed."""

    name: str
    proposed: list[tuple[str, float]]  # top depth (item id, score), best first
    target_ranks: dict[str, int | None]  # rank in the whole catalog (1 = first); None = never ranked (seen)
    spread: ScoreSpread
    note: str = ""

    def best_target(self) -> tuple[str, int] | None:
        ranked = [(rank, item) for item, rank in self.target_ranks.items() if rank is not None]
        return (min(ranked)[1], min(ranked)[0]) if ranked else None


@dataclass
class RuleRemoval:
    """An item a rule took out of the top k (``rank_after`` None: out of the list altogether)."""

    item: str
    rule: str
    reason: str
    rank_before: int
    rank_after: int | None
    is_target: bool


@dataclass
class ListEntry:
    rank: int
    item: str
    score: float
    reason: str
    is_target: bool


@dataclass
class UserDiagnosis:
    """Everything ``recforge diagnose`` reports for one user (JSON-ready through :meth:`to_dict`)."""

    user_id: str
    outcome: str  # one of OUTCOMES, or FALLBACK for an unknown user
    explanation: str  # the one-line diagnosis
    k: int
    depth: int
    model: str
    target_kind: str = ""  # "held-out" (the backtest's newest fold) or "recent" (the user's own last items)
    split: str = ""
    targets: list[str] = field(default_factory=list)
    unknown_targets: list[str] = field(default_factory=list)  # items no model could know at the cutoff
    history_items: int = 0
    generators: list[GeneratorView] = field(default_factory=list)
    skipped_generators: dict[str, str] = field(default_factory=dict)  # name -> why it was not fitted
    ranking: GeneratorView | None = None  # the final model before the rules
    removals: list[RuleRemoval] = field(default_factory=list)
    final: list[ListEntry] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)  # registry version, data snapshot, cutoff, ...

    def to_dict(self) -> dict:
        return asdict(self)


def ranking_view(
    name: str, model: Recommender, user_row: int, targets: np.ndarray, depth: int, k: int, note: str = ""
) -> GeneratorView:
    """The model's ranking of the whole catalog for one user (seen items filtered, as everywhere)."""
    items, scores = model.recommend(np.array([user_row]), len(model.item_ids))
    items, scores = items[0], scores[0]
    valid = items >= 0
    items, scores = items[valid], scores[valid]
    position = {int(item): rank for rank, item in enumerate(items, start=1)}
    return GeneratorView(
        name=name,
        proposed=[(str(model.item_ids[i]), float(s)) for i, s in zip(items[:depth], scores[:depth], strict=True)],
        target_ranks={str(model.item_ids[t]): position.get(int(t)) for t in targets},
        spread=score_spread(scores[:depth], k),
        note=note,
    )


def stage_removals(
    trace: ListTrace,
    model: Recommender,
    user_row: int,
    k: int,
    targets: set[int],
    forbidden: np.ndarray,
    category_names: np.ndarray,
    rules: ListRules,
) -> list[RuleRemoval]:
    """Items each traced rule took out of the top k, with the rule's name and why it applies to the item."""
    removals = []
    seen = model.seen.tocsr()
    history = set(seen.indices[seen.indptr[user_row] : seen.indptr[user_row + 1]].tolist())
    n_history = len(history)
    for (_, before), (stage, after) in zip(trace.stages, trace.stages[1:], strict=False):
        top_before = [int(i) for i in before.ranked[0][:k] if i >= 0]
        after_row = [int(i) for i in after.ranked[0] if i >= 0]
        top_after = set(after_row[:k])
        for rank, item in enumerate(top_before, start=1):
            if item in top_after:
                continue
            rank_after = after_row.index(item) + 1 if item in after_row else None
            rule, reason = _why(stage, item, history, n_history, forbidden, category_names, rules)
            removals.append(RuleRemoval(str(model.item_ids[item]), rule, reason, rank, rank_after, item in targets))
    return removals


def _why(
    stage: str,
    item: int,
    history: set[int],
    n_history: int,
    forbidden: np.ndarray,
    category_names: np.ndarray,
    rules: ListRules,
) -> tuple[str, str]:
    """The manifest name of the rule behind a stage's removal of `item`, and the reason it applies."""
    if stage == EXCLUDE_SEEN:
        if item in history:
            return "exclude_seen_items", "the user already interacted with it (training history)"
        return "exclude_purchased_items", "the user bought or rated it since the model's snapshot"
    if stage == EXCLUDE_CATALOG:
        reason = forbidden[item] or "not allowed by the catalog"
        rule = "exclude_out_of_stock_items" if reason == "out of stock" else "exclude_blocked_items"
        return rule, reason
    if stage == "cold_user_popularity_blend":
        return stage, (
            f"cold user ({n_history} distinct training items < {rules.cold_user_below}): popular items of the "
            f"user's categories took the slot (popularity weight {rules.cold_popularity_weight:g})"
        )
    if stage == "mmr_diversity":
        return stage, f"too similar to the items above it (MMR lambda {rules.mmr_lambda:g})"
    if stage == CALIBRATION:
        return stage, (
            f"its category would move the list's category mix away from the user's history "
            f"(calibration lambda {rules.calibration_lambda:g})"
        )
    if stage.startswith("seller_cap"):
        return stage, f"its seller already has {rules.seller_cap} of the first {rules.category_cap_head} slots"
    if stage.startswith("category_cap"):
        per_category = max(1, int(np.floor(rules.category_cap * rules.category_cap_head)))
        return stage, (
            f"category {category_names[item]!r} already fills {per_category} of the first "
            f"{rules.category_cap_head} slots (cap {rules.category_cap:.0%})"
        )
    return stage, "pushed below the top k"


def diagnose_user(
    final_model: Recommender,
    generators: list[tuple[str, Recommender]],
    fold: Fold,
    user_id: str,
    rules: ListRules,
    forbidden: np.ndarray,
    category_names: np.ndarray,
    k: int,
    depth: int,
    target_kind: str = "held-out",
    generator_note: str = "",
    sellers: np.ndarray | None = None,
) -> UserDiagnosis:
    """Diagnose `user_id`'s list from models fitted on ``fold.train`` (see the module docstring).

    `generators` are (name, model) pairs fitted on the same training data as `final_model`, so item
    indices agree; `forbidden` and `category_names` are :func:`models.lists.rules.catalog_status`
    for ``final_model.item_ids`` (the training items, then any a content model added). The user must
    be an evaluated user of the fold with a history.
    """
    if not 1 <= k <= depth:
        raise ValueError(f"need 1 <= k <= depth, got k={k}, depth={depth}")
    if k > rules.top_n:
        raise ValueError(f"k={k} is more than the {rules.top_n} items a published list holds (publish_top_n)")
    position = np.flatnonzero(fold.eval_user_ids == user_id)
    if not len(position) or fold.train_rows[position[0]] < 0:
        raise ValueError(f"user {user_id!r} has no held-out items with a history before them in {fold.name}")
    row, user_row = int(position[0]), int(fold.train_rows[position[0]])
    # A content model knows items beyond training's: its indices address the re-ordered columns.
    relevant, _ = fold.columns_for(final_model.item_ids)
    column_ids = fold.column_ids(final_model.item_ids)
    n_items = len(final_model.item_ids)
    columns = relevant[row].indices
    targets = np.sort(columns[columns < n_items])
    unknown = [str(column_ids[c]) for c in np.sort(columns[columns >= n_items])]
    target_ids = [str(final_model.item_ids[t]) for t in targets]

    views = [ranking_view(name, model, user_row, targets, depth, k) for name, model in generators]
    ranking = ranking_view(final_model.name, final_model, user_row, targets, depth, k, generator_note)

    categories = np.unique(category_names, return_inverse=True)[1].astype(np.int64)
    trace = ListTrace()
    top = ranked_lists(
        final_model, np.array([user_row]), rules, forbidden == "", categories, trace=trace, sellers=sellers
    ).head(k)
    why = reasons(final_model, top, final_model.item_ids, rules, users=np.array([user_row]))
    target_set = set(targets.tolist())
    final = [
        ListEntry(rank, str(final_model.item_ids[item]), float(score), str(why[0, rank - 1]), int(item) in target_set)
        for rank, (item, score) in enumerate(zip(top.ranked[0], top.scores[0], strict=True), start=1)
        if item >= 0
    ]
    removals = stage_removals(trace, final_model, user_row, k, target_set, forbidden, category_names, rules)
    seen_filtered = dict(trace.stages)[EXCLUDE_SEEN].ranked[0]
    before_rules = [str(final_model.item_ids[i]) for i in seen_filtered if i >= 0]
    outcome, explanation = classify(target_ids, unknown, views, ranking, before_rules, final, removals, k, depth)
    if cold_users(final_model, np.array([user_row]), rules)[0]:
        explanation += f" (a cold user: fewer than {rules.cold_user_below} distinct training items)"
    return UserDiagnosis(
        user_id=user_id,
        outcome=outcome,
        explanation=explanation,
        k=k,
        depth=depth,
        model=final_model.name,
        target_kind=target_kind,
        split=fold.name,
        targets=target_ids,
        unknown_targets=unknown,
        history_items=int(np.diff(final_model.seen.tocsr().indptr)[user_row]),
        generators=views,
        ranking=ranking,
        removals=removals,
        final=final,
    )


def classify(
    targets: list[str],
    unknown: list[str],
    views: list[GeneratorView],
    ranking: GeneratorView,
    before_rules: list[str],
    final: list[ListEntry],
    removals: list[RuleRemoval],
    k: int,
    depth: int,
) -> tuple[str, str]:
    """The outcome (one of ``OUTCOMES``) and its one-line explanation, checked from the end of the pipeline back.

    `before_rules` is the final model's list with only seen items filtered (the traced stage the
    rules start from), `ranking` the same model's ranking of the whole catalog.
    """
    hits = [entry for entry in final if entry.is_target]
    if hits:
        shown = ", ".join(f"{e.item} at rank {e.rank}" for e in hits[:3])
        return NONE, f"none: a hit, {shown} of the final top {k}"
    pre_rule = before_rules[:k]
    ranked_in = [(pre_rule.index(t) + 1, t) for t in targets if t in pre_rule]
    if ranked_in:
        rank, item = min(ranked_in)
        removal = next((r for r in removals if r.item == item), None)
        rule = f"{removal.rule} ({removal.reason})" if removal else "a rule"
        return RULES, f"rules: {item} was rank {rank} before the rules; {rule} took it out of the top {k}"
    proposed = [
        (rank, view.name, item) for view in views for item, rank in view.target_ranks.items() if rank and rank <= depth
    ]
    if proposed:
        rank, name, item = min(proposed)
        if name == ranking.name:  # the champion is its own generator (any model but the ranker)
            return (
                RANKING,
                f"ranking: {ranking.name} proposes {item} at rank {rank} of its top {depth}, below the top {k}",
            )
        final_rank = ranking.target_ranks.get(item)
        where = f"rank {final_rank}" if final_rank else "no rank"
        return RANKING, (
            f"ranking: {item} was proposed by {name} (rank {rank} of its top {depth}) but the final ranking "
            f"({ranking.name}) put it at {where}, below the top {k}"
        )
    best = [(rank, view.name) for view in views for rank in view.target_ranks.values() if rank]
    closest = f"; closest: {min(best)[1]} at rank {min(best)[0]}" if best else ""
    unknown_note = f"; {len(unknown)} of them unknown to every model at the cutoff" if unknown else ""
    total = len(targets) + len(unknown)
    return CANDIDATE_GENERATION, (
        f"candidate generation: none of the {total} {'item' if total == 1 else 'items'} is in any generator's "
        f"top {depth}{closest}{unknown_note}"
    )
