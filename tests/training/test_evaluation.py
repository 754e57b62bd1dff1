"""Evaluation: splits without look-ahead, segments, new items, lists scored exactly as published, backtests."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from models import ALSRecommender, PopularityRecommender, RecentPopularityRecommender, Recommender
from models.dataset import Interactions
from models.evaluation import (
    EvaluationConfig,
    EventLog,
    SegmentBounds,
    backtest,
    global_time_folds,
    leave_last_n_fold,
    random_ratio_folds,
    score_fold,
)
from models.evaluation.evaluate import fold_lists
from models.evaluation.segments import history_sizes, new_item_relevance, segment_masks
from models.evaluation.splits import SECONDS_PER_DAY, Fold
from models.lists.ranked import ListRules, cold_users, ranked_lists
from models.lists.rules import allowed_and_categories, category_capped_order, head_within_cap
from pipelines.training.candidates import UnknownCandidate, candidate_factories, candidate_params
from pipelines.training.data import load_evaluation_data, read_catalog, read_event_log
from tests.conftest import copy_home, make_settings

START = datetime(2026, 1, 1, tzinfo=UTC)


def log_of(rows: list[tuple[str, str, float]], weight: float = 1.0, half_life_days: float = 14.0) -> EventLog:
    """Events given as (user, item, day offset from START)."""
    frame = pd.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "event_ts": [START + timedelta(days=r[2]) for r in rows],
            "weight": weight,
        }
    )
    return EventLog.from_frame(frame, half_life_days)


def synthetic_log(n_users=60, n_items=30, days=20, seed=0) -> EventLog:
    rng = np.random.default_rng(seed)
    rows = [
        (f"u{rng.integers(n_users):03d}", f"i{min(rng.zipf(1.5), n_items) - 1:03d}", rng.uniform(0, days))
        for _ in range(2500)
    ]
    return log_of(rows)


def catalog_for(items, categories=None, in_stock=None, blocked=None) -> pd.DataFrame:
    n = len(items)
    return pd.DataFrame(
        {
            "item_id": list(items),
            "category": categories if categories is not None else [f"c{i % 3}" for i in range(n)],
            "in_stock": in_stock if in_stock is not None else [True] * n,
            "is_blocked": blocked if blocked is not None else [False] * n,
        }
    )


def pairs(fold) -> set[tuple[str, int]]:
    rows, cols = fold.relevant.nonzero()
    return {(fold.eval_user_ids[r], c) for r, c in zip(rows, cols, strict=True)}


# --- global time cutoffs


def test_global_time_training_holds_no_event_at_or_after_the_cutoff():
    log = synthetic_log()
    for fold in global_time_folds(log, 3, test_days=3, step_days=3, new_item_days=2):
        train_events = log.ts[log.ts < fold.reference_ts]
        assert fold.train.matrix.sum() > 0 and len(train_events)
        # every training (user, item) has an event before the cutoff, none is built from later events
        trained = {(u, i) for u, i in zip(*fold.train.matrix.nonzero(), strict=True)}
        before = {
            (
                np.searchsorted(fold.train.user_ids, log.user_ids[u]),
                np.searchsorted(fold.train.item_ids, log.item_ids[i]),
            )
            for u, i in zip(log.users[log.ts < fold.reference_ts], log.items[log.ts < fold.reference_ts], strict=True)
        }
        assert trained == before


def test_rolling_cutoffs_are_step_days_apart_and_end_test_days_before_the_log_ends():
    log = synthetic_log()
    folds = global_time_folds(log, 3, test_days=3, step_days=2, new_item_days=2)
    cutoffs = [f.reference_ts for f in folds]
    assert cutoffs[0] == log.end - 3 * SECONDS_PER_DAY
    assert np.diff(cutoffs).tolist() == [-2 * SECONDS_PER_DAY, -2 * SECONDS_PER_DAY]


def test_held_out_items_are_only_those_in_the_test_window_and_not_seen_in_training():
    log = log_of([("a", "x", 0), ("a", "y", 1), ("a", "x", 5), ("a", "z", 5.5), ("b", "y", 2), ("b", "w", 9)])
    fold = global_time_folds(log, 1, test_days=5, step_days=5, new_item_days=1)[0]  # cutoff at day 4
    assert set(fold.train.item_ids) == {"x", "y"}
    held = {(user, column) for user, column in pairs(fold)}
    # a's return to x is not a test case; z and w are unknown at training and stay in the denominators
    assert {user for user, _ in held} == {"a", "b"} and len(held) == 2
    assert fold.n_unknown_items == 2 and fold.relevant.shape[1] == fold.train.n_items + 2


def test_training_weights_decay_from_the_cutoff():
    log = log_of([("a", "x", 0), ("a", "y", 7), ("b", "y", 15)], weight=2.0, half_life_days=7)
    fold = global_time_folds(log, 1, test_days=1, step_days=1, new_item_days=1)[0]  # cutoff at day 14
    weights = dict(zip(fold.train.item_ids, fold.train.matrix.toarray()[0], strict=True))
    assert weights["x"] == pytest.approx(2.0 * 0.25) and weights["y"] == pytest.approx(2.0 * 0.5)


def test_a_log_too_short_for_the_backtest_is_refused_naming_the_settings():
    log = synthetic_log(days=10)
    with pytest.raises(ValueError, match="too short for 4 folds.*lower backtest_folds or backtest_step_days"):
        global_time_folds(log, 4, test_days=3, step_days=3, new_item_days=2)


def test_an_event_log_without_its_columns_is_refused():
    with pytest.raises(ValueError, match=r"lacks columns \['event_ts', 'weight'\]"):
        EventLog.from_frame(pd.DataFrame({"user_id": ["a"], "item_id": ["x"]}), 14)


# --- other strategies


def test_leave_last_n_holds_out_each_users_last_n_discoveries_and_trains_before_them():
    log = log_of(
        [("a", "x", 0), ("a", "y", 1), ("a", "z", 2), ("a", "x", 3), ("b", "x", 0), ("b", "z", 0.5), ("b", "y", 5)]
    )
    fold = leave_last_n_fold(log, 1, new_item_days=1)
    held = {(user, fold.train.item_ids[c]) for user, c in pairs(fold)}
    assert held == {("a", "z"), ("b", "y")}
    # a's return to x (day 3) comes after a's test began (day 2): training keeps only a's days 0 and 1
    a = list(fold.train.user_ids).index("a")
    reference_day = (fold.reference_ts - START.timestamp()) / SECONDS_PER_DAY
    expected = sum(2 ** (-(reference_day - day) / 14) for day in (0, 1))
    assert fold.train.matrix[a].sum() == pytest.approx(expected, rel=1e-5)


def test_leave_last_n_skips_users_with_too_few_items():
    log = log_of([("a", "x", 0), ("b", "x", 0), ("b", "y", 1)])
    fold = leave_last_n_fold(log, 1, new_item_days=1)
    assert list(fold.eval_user_ids) == ["b"]


def test_leave_last_n_holds_out_what_a_per_user_group_by_would_on_a_log_with_ties_and_repeats():
    """The held-out pairs come from sorting codes; they equal a plain group-by of (user, item) first times,
    ranked per user by (time, item), on a log with repeated pairs and equal times."""
    from models.evaluation.splits import _last_distinct_items

    rng = np.random.default_rng(3)
    n_events = 5_000
    users, items = rng.integers(0, 200, n_events), rng.integers(0, 60, n_events)
    ts = rng.integers(0, 50, n_events) * 3600  # coarse times: many ties
    log = EventLog.from_codes(np.array([f"u{n:04d}" for n in range(200)]), np.array([f"i{n:04d}" for n in range(60)]),
                              users, items, ts, np.ones(n_events), 14)  # fmt: skip
    for n in (1, 3):
        first = pd.DataFrame({"u": users, "i": items, "ts": ts}).groupby(["u", "i"], as_index=False)["ts"].min()
        first = first.sort_values(["u", "ts", "i"])
        first["from_end"] = first.groupby("u").cumcount(ascending=False)
        first["size"] = first.groupby("u")["i"].transform("size")
        expected = first[(first["from_end"] < n) & (first["size"] > n)]
        got = _last_distinct_items(log, n)
        assert [list(a) for a in got] == [list(expected[c]) for c in ("u", "i", "ts")]


def test_random_ratio_is_reproducible_for_a_seed_and_holds_out_about_the_ratio():
    log = synthetic_log()
    first = random_ratio_folds(log, 0.25, 2, seed=7, new_item_days=2)
    again = random_ratio_folds(log, 0.25, 1, seed=7, new_item_days=2)
    assert pairs(first[0]) == pairs(again[0]) and pairs(first[0]) != pairs(first[1])
    n_pairs = len(np.unique(log.users * len(log.item_ids) + log.items))
    assert abs(first[0].relevant.nnz / n_pairs - 0.25) < 0.05


def test_random_ratio_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match=r"ratio must be in \(0, 1\)"):
        random_ratio_folds(synthetic_log(), 1.0, 1, seed=0, new_item_days=2)


# --- segments and new items


def test_segments_follow_the_distinct_training_items_of_each_user():
    bounds = SegmentBounds(cold_below=5, power_above=50)
    assert bounds.label(np.array([0, 4, 5, 50, 51])).tolist() == ["cold", "cold", "casual", "casual", "power"]


def test_a_user_without_training_history_is_cold_and_gets_the_fallback_list():
    log = log_of([("a", "x", 0), ("a", "y", 0.5), ("b", "x", 1), ("c", "y", 5), ("new", "x", 5.2), ("new", "z", 5.5)])
    fold = global_time_folds(log, 1, test_days=2, step_days=2, new_item_days=1)[0]
    new = list(fold.eval_user_ids).index("new")
    assert fold.train_rows[new] == -1 and history_sizes(fold)[new] == 0
    assert segment_masks(fold, SegmentBounds())["cold"][new]
    model = PopularityRecommender().fit(fold.train)
    lists = fold_lists(model, fold, catalog_for(["x", "y", "z"]), EvaluationConfig(k=2, recall_k=2))
    assert fold.train.item_ids[lists["rules"][new, 0]] == "x"  # the most popular allowed item


def test_new_items_are_first_seen_within_the_window_before_the_cutoff_but_not_at_the_log_start():
    log = log_of([("a", "old", 0), ("a", "early", 1), ("b", "fresh", 8), ("b", "old", 9), ("c", "fresh", 11)])
    fold = global_time_folds(log, 1, test_days=1, step_days=1, new_item_days=3)[0]  # cutoff day 10
    new = dict(zip(fold.train.item_ids, fold.is_new, strict=True))
    assert new == {"old": False, "early": False, "fresh": True}
    restricted = new_item_relevance(fold)
    assert restricted.nnz == 1 and fold.train.item_ids[restricted.nonzero()[1][0]] == "fresh"


# --- scoring after the business rules


def test_blocked_and_out_of_stock_items_never_reach_the_scored_lists():
    log = synthetic_log()
    fold = global_time_folds(log, 1, test_days=3, step_days=3, new_item_days=2)[0]
    items = fold.train.item_ids
    blocked = [i in items[:3] for i in items]
    out_of_stock = [i in items[3:5] for i in items]
    catalog = catalog_for(items, in_stock=[not x for x in out_of_stock], blocked=blocked)
    model = PopularityRecommender().fit(fold.train)
    lists = fold_lists(model, fold, catalog, EvaluationConfig(k=5, recall_k=10))
    assert not np.isin(lists["rules"], np.arange(5)).any()
    assert np.isin(lists["raw"], np.arange(5)).any()  # the raw view shows what the rules removed


class FixedScores(Recommender):
    """A recommender whose scores are given: the ranking a test needs, through the real base class."""

    name = "fixed_scores_test"

    def __init__(self, scores: np.ndarray, random_state: int = 0):
        super().__init__(random_state)
        self.scores = scores

    def _fit(self, interactions) -> None:
        pass

    def _score(self, user_index: np.ndarray) -> np.ndarray:
        return self.scores[user_index]


def test_rules_ranking_equals_a_whole_catalog_ranking_when_the_head_needs_deep_candidates():
    """Items 0-299 are one category. User 0's ranking is 0, 1, 2, ...: only the whole catalog fills its head.
    User 1 meets other categories from rank 150 on (the 4x stage). User 2 has a diverse top (the first stage)."""
    n_users, n_items = 3, 1000
    categories = np.where(np.arange(n_items) < 300, 0, 1 + np.arange(n_items) % 5)
    scores = np.tile(-np.arange(n_items, dtype=np.float32), (n_users, 1))
    scores[1, 300:320] = -150.5 - np.arange(20)
    scores[2, 300:320] = 10.5 - np.arange(20)  # no ties with the integer scores
    interactions = Interactions(
        np.array(["a", "b", "c"], dtype=object),
        np.array([f"i{i}" for i in range(n_items)], dtype=object),
        sp.csr_matrix((n_users, n_items), dtype=np.float32),
    )
    model = FixedScores(scores).fit(interactions)
    allowed = np.ones(n_items, dtype=bool)
    users = np.arange(n_users)
    no_cold_blend = ListRules(top_n=20, candidate_margin=50, category_cap=0.4, cold_user_below=0)
    ranked = ranked_lists(model, users, no_cold_blend, allowed, categories).ranked
    full, _ = model.recommend(users, n_items, allowed_items=allowed)
    expected = np.take_along_axis(
        full, category_capped_order(full, categories, 0.4, no_cold_blend.category_cap_head), axis=1
    )[:, :20]
    np.testing.assert_array_equal(ranked, expected)
    assert head_within_cap(ranked, categories, 0.4, no_cold_blend.category_cap_head).all()


def test_evaluated_lists_are_the_published_lists(built):
    """The same model, catalog and rules give the same top N in evaluation as in publication.

    With every default rule on, the cold-user popularity blend included, and with MMR too.
    """
    import dataclasses

    from models.lists.stored import build_lists
    from pipelines.publication.publish import read_items, read_purchases

    data = load_evaluation_data(built)
    model = ALSRecommender(factors=8, iterations=5).fit(data.full_interactions())
    rules = dataclasses.replace(ListRules.from_settings(built), top_n=20)
    fold = whole_history_fold(model)
    cold = cold_users(model, np.arange(len(model.user_ids)), rules)
    assert cold.any() and not cold.all(), "the tiny world should have cold and warm users"
    for mmr in (False, True):
        rules = dataclasses.replace(rules, mmr_enabled=mmr)
        published, _ = build_lists(model, read_items(built), rules, read_purchases(built))
        assert set(published["reason"]) >= {"model", "popular"}
        config = EvaluationConfig(k=10, recall_k=20, rules=rules)
        ranked = fold_lists(model, fold, read_catalog(built), config)["rules"]
        evaluated = {
            (model.user_ids[u], rank + 1, model.item_ids[i])
            for u, row in enumerate(ranked)
            for rank, i in enumerate(row)
            if i >= 0
        }
        top = published[published["rank"] <= config.depth]
        assert evaluated == set(top[["user_id", "rank", "item_id"]].itertuples(index=False, name=None)), f"mmr={mmr}"


def whole_history_fold(model: Recommender) -> Fold:
    """A fold whose evaluated users are all of the model's users, with their whole history as training."""
    n_users, n_items = model.seen.shape
    return Fold(
        name="whole_history",
        strategy="test",
        train=Interactions(model.user_ids, model.item_ids, model.seen.tocsr()),
        relevant=sp.csr_matrix((n_users, n_items), dtype=np.float32),
        eval_user_ids=model.user_ids,
        train_rows=np.arange(n_users),
        reference_ts=0,
        is_new=np.zeros(n_items, dtype=bool),
        n_unknown_items=0,
    )


def test_the_newest_fold_is_the_warehouse_split(built):
    """Fold 0's held-out pairs are exactly the mart's test pairs that are not in its train/valid rows."""
    from pipelines.warehouse.connection import read_frame

    fold = load_evaluation_data(built).folds[0]
    split = read_frame(built, "select user_id, item_id, split from marts.interactions_split")
    history = set(split.loc[split["split"] != "test", ["user_id", "item_id"]].itertuples(index=False, name=None))
    test = set(split.loc[split["split"] == "test", ["user_id", "item_id"]].itertuples(index=False, name=None))
    unknown = sorted(test - history, key=str)
    item_of = dict(enumerate(fold.train.item_ids))
    assert fold.train.n_users == len({u for u, _ in history})
    rows, cols = fold.relevant.nonzero()
    known_pairs = {(fold.eval_user_ids[r], item_of[c]) for r, c in zip(rows, cols, strict=True) if c in item_of}
    assert known_pairs == {(u, i) for u, i in unknown if i in set(fold.train.item_ids)}
    assert fold.relevant.nnz == len(unknown)


@pytest.mark.parametrize("rows_per_batch", [1_000_000, 997])
def test_the_warehouse_reader_and_a_frame_give_the_same_event_log(built, monkeypatch, rows_per_batch):
    """Arrow batches straight from the mart (one batch, or many) code ids exactly as ``EventLog.from_frame`` does."""
    import pipelines.training.data as data
    from pipelines.warehouse.connection import read_frame

    monkeypatch.setattr(data, "ROWS_PER_BATCH", rows_per_batch)
    streamed = read_event_log(built)
    frame = read_frame(built, data.EVENTS_SQL)
    framed = EventLog.from_frame(frame, built.decay_half_life_days)
    assert len(streamed) == len(frame) > 1000
    for name in ("user_ids", "item_ids", "users", "items", "ts", "weight"):
        assert np.array_equal(getattr(streamed, name), getattr(framed, name)), name
        assert getattr(streamed, name).dtype == getattr(framed, name).dtype, name
    assert list(streamed.user_ids) == sorted(streamed.user_ids)


def test_the_id_coder_codes_ids_met_in_several_batches_once_and_in_id_order():
    import pyarrow as pa

    from pipelines.training.data import IdCoder

    coder = IdCoder("user_id")
    for batch in (["b", "a", "b"], ["c", "a"], ["é", "B", "c", "b"]):
        coder.add(pa.array(batch, type=pa.string()))
    ids, codes = coder.codes()
    assert list(ids) == ["B", "a", "b", "c", "é"]
    assert [ids[c] for c in codes] == ["b", "a", "b", "c", "a", "é", "B", "c", "b"]
    with pytest.raises(ValueError, match="without user_id"):
        coder.add(pa.array(["a", None]))


def test_codes_follow_id_order_whatever_order_the_events_come_in():
    forward = log_of([("b", "y", 0), ("a", "x", 1), ("é", "Z", 2), ("B", "x", 3)])
    backward = log_of([("B", "x", 3), ("é", "Z", 2), ("a", "x", 1), ("b", "y", 0)])
    assert list(forward.user_ids) == ["B", "a", "b", "é"] and list(forward.item_ids) == ["Z", "x", "y"]
    events = [sorted(zip(log.users, log.items, log.ts, strict=True)) for log in (forward, backward)]
    assert events[0] == events[1]


def test_an_event_log_refuses_ids_out_of_order():
    with pytest.raises(ValueError, match="id_order"):
        EventLog.from_codes(np.array(["b", "a"], dtype=object), np.array(["x"], dtype=object),
                            np.array([0, 1]), np.array([0, 0]), np.array([0, 1]), np.ones(2), 14.0)  # fmt: skip


def test_a_user_sample_estimates_the_full_metrics_within_its_standard_error_and_repeats_with_its_seed(built):
    """Folds with more test users than eval_max_users are scored on a seeded sample; each accuracy metric's
    mean over folds lands within two of its reported standard errors of the all-users value."""
    config = EvaluationConfig(k=10, recall_k=20)
    full_data = load_evaluation_data(built)
    sampled_settings = built.model_copy(update={"eval_max_users": 60})
    sampled_data = load_evaluation_data(sampled_settings)
    assert all(f.n_eval_users > 60 for f in full_data.folds), "the tiny world should need a sample"
    assert [f.n_eval_users for f in sampled_data.folds] == [60] * len(full_data.folds)
    assert [f.population_users for f in sampled_data.folds] == [f.n_eval_users for f in full_data.folds]

    full = backtest(PopularityRecommender, full_data.folds, full_data.catalog, config).summary()
    sampled = backtest(PopularityRecommender, sampled_data.folds, sampled_data.catalog, config).summary()
    assert sampled["eval_user_share"] < 1.0 == full["eval_user_share"]
    for metric in config.names.accuracy:
        error = sampled[metric + "_se"]
        assert 0 < error < 0.2, metric
        assert abs(sampled[metric] - full[metric]) <= 2 * error, (metric, sampled[metric], full[metric], error)

    again = load_evaluation_data(sampled_settings)
    assert [list(f.eval_user_ids) for f in again.folds] == [list(f.eval_user_ids) for f in sampled_data.folds]
    repeated = backtest(PopularityRecommender, again.folds, again.catalog, config).summary()
    timings = ("fit_seconds", "eval_seconds")
    assert {k: v for k, v in repeated.items() if k not in timings} == {
        k: v for k, v in sampled.items() if k not in timings
    }


def test_folds_within_eval_max_users_are_scored_whole(built):
    data = load_evaluation_data(built)
    assert built.eval_max_users >= max(f.n_eval_users for f in data.folds)
    assert all(f.population_users == 0 for f in data.folds)
    assert data.folds[0].sample_users(10_000, seed=1) is data.folds[0]


def test_signal_weights_come_from_the_settings_through_the_event_mart(built):
    weights = built.signal_weights
    assert weights["purchase"] > weights["add_to_cart"] > weights["click"] > weights["view"]
    log = read_event_log(built)
    assert set(np.unique(log.weight)) <= set(weights.values())


def test_a_bot_only_dbt_flags_never_reaches_training_or_drift(built, tmp_path):
    """A steady scraper: more than bot_max_events_per_day views on one day, but under the per-minute rule."""
    import json

    from pipelines.ingest import ingest_interval
    from pipelines.monitoring.drift import load_window
    from pipelines.simulate import landing_file_for
    from pipelines.warehouse.connection import connect
    from pipelines.warehouse.transform import build_warehouse

    settings = copy_home(built, tmp_path / "home")
    day = START + timedelta(days=2)
    items = read_catalog(settings)["item_id"].tolist()
    gap = timedelta(seconds=30)  # two events a minute: far below bot_max_events_per_minute
    assert 60 / gap.total_seconds() < settings.bot_max_events_per_minute
    n_events = settings.bot_max_events_per_day + 1
    assert n_events * gap < timedelta(days=1)
    scraper = [
        {
            "event_id": f"scraper-{n}",
            "user_id": "steady-scraper",
            "item_id": items[n % len(items)],
            "event_type": "view",
            "event_ts": (day + n * gap).isoformat(),
            "session_id": "scraper",
            "context": {},
        }
        for n in range(n_events)
    ]
    (landing_file_for(settings.landing_dir, day).parent / "scraper.jsonl").write_text(
        "\n".join(json.dumps(event) for event in scraper) + "\n"
    )
    ingest_interval(settings, day, day + timedelta(days=1))
    build_warehouse(settings)
    with connect(settings) as con:  # the premise: ingest accepts every event, dbt flags the user
        accepted = con.execute("select count(*) from raw.events where user_id = 'steady-scraper'").fetchone()[0]
        flagged = con.execute("select count(*) from intermediate.int_bot_users where user_id = 'steady-scraper'")
        flagged = flagged.fetchone()[0]
    assert accepted == n_events and flagged == 1

    data = load_evaluation_data(settings)
    assert "steady-scraper" not in set(data.log.user_ids)
    assert "steady-scraper" not in set(data.full_interactions().user_ids)
    for fold in data.folds:
        assert "steady-scraper" not in set(fold.train.user_ids) | set(fold.eval_user_ids)
    window = load_window(settings, day + timedelta(days=1))
    assert "steady-scraper" not in window.users.index and len(window.users)


# --- backtest


def test_backtest_reports_each_metrics_mean_and_spread_over_folds():
    log = synthetic_log()
    folds = global_time_folds(log, 3, test_days=3, step_days=3, new_item_days=2)
    catalog = catalog_for(log.item_ids)
    result = backtest(PopularityRecommender, folds, catalog, EvaluationConfig(k=5, recall_k=10))
    per_fold = np.array(list(result.per_fold("ndcg_at_5").values()))
    summary = result.summary()
    assert len(per_fold) == 3
    assert summary["ndcg_at_5"] == pytest.approx(per_fold.mean())
    assert summary["ndcg_at_5_std"] == pytest.approx(per_fold.std())
    for key in ("segment.cold.ndcg_at_5", "new_items.ndcg_at_5", "raw.ndcg_at_5", "coverage_at_5", "novelty_at_5"):
        assert key in summary and key + "_std" in summary


def test_a_fold_where_a_segment_has_no_user_does_not_drag_its_mean_to_zero():
    log = synthetic_log()
    folds = global_time_folds(log, 2, test_days=3, step_days=3, new_item_days=2)
    result = backtest(PopularityRecommender, folds, catalog_for(log.item_ids), EvaluationConfig(k=5, recall_k=10))
    # as if the older fold had no power user and the newer one three
    result.folds[1].metrics.update({"segment.power.n_eval_users": 0, "segment.power.ndcg_at_5": 0.0})
    result.folds[0].metrics.update({"segment.power.n_eval_users": 3, "segment.power.ndcg_at_5": 0.4})
    assert result.summary()["segment.power.ndcg_at_5"] == pytest.approx(0.4)


def test_score_fold_reports_overall_segment_and_new_item_metrics_for_both_views():
    log = synthetic_log()
    fold = global_time_folds(log, 1, test_days=3, step_days=3, new_item_days=2)[0]
    score = score_fold(PopularityRecommender().fit(fold.train), fold, catalog_for(log.item_ids), EvaluationConfig())
    for prefix in ("", "raw.", "segment.cold.", "segment.casual.", "segment.power.", "new_items.", "raw.new_items."):
        assert prefix + "ndcg_at_10" in score.metrics
    assert score.exposure["rules"].sum() == pytest.approx(1.0)


# --- candidates from the registry


def test_candidates_are_built_from_the_registry_with_their_settings(tmp_path):
    settings = make_settings(tmp_path, train_candidates=["popularity", "als"], als_factors=7)
    factories = candidate_factories(settings)
    assert list(factories) == ["popularity", "als"]
    als = factories["als"]()
    assert isinstance(als, ALSRecommender) and als.factors == 7 and als.random_state == settings.train_random_state


def test_per_model_overrides_win_over_settings(tmp_path):
    settings = make_settings(tmp_path, train_model_params={"als": {"factors": 3, "iterations": 2}})
    assert candidate_params("als", settings)["factors"] == 3


def test_an_unknown_candidate_is_refused_listing_the_registered_models(tmp_path):
    settings = make_settings(tmp_path, train_candidates=["popularity", "telepathy"])
    with pytest.raises(UnknownCandidate, match=r"unknown model 'telepathy': registered models are \[.*'als'"):
        candidate_factories(settings)


def test_an_override_the_model_does_not_take_is_refused(tmp_path):
    settings = make_settings(tmp_path, train_model_params={"als": {"depth": 3}})
    with pytest.raises(ValueError, match=r"sets \['depth'\], which ALSRecommender does not take"):
        candidate_params("als", settings)


# --- failure paths


def test_an_empty_event_log_is_refused():
    empty = pd.DataFrame({"user_id": [], "item_id": [], "event_ts": [], "weight": []})
    with pytest.raises(ValueError, match="event log is empty"):
        EventLog.from_frame(empty, 14)


def test_a_test_window_of_only_returns_to_training_items_is_refused():
    log = log_of([("a", "x", 0), ("b", "y", 1), ("a", "x", 5), ("b", "y", 5.5)])
    with pytest.raises(ValueError, match="no held-out interaction with an item the user had not seen"):
        global_time_folds(log, 1, test_days=2, step_days=2, new_item_days=1)


def test_leave_last_n_without_a_user_with_enough_items_is_refused():
    with pytest.raises(ValueError, match="leave-last-2: no user has more than 2 distinct items"):
        leave_last_n_fold(log_of([("a", "x", 0), ("a", "y", 1)]), 2, new_item_days=1)


def test_segment_bounds_out_of_order_are_refused():
    with pytest.raises(ValueError, match="0 < cold_below <= power_above"):
        SegmentBounds(cold_below=60, power_above=50)


def test_a_category_cap_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match=r"category_cap must be in \(0, 1\]"):
        ListRules(category_cap=1.5)


def test_evaluating_deeper_than_publication_stores_is_refused():
    with pytest.raises(ValueError, match=r"publication stores only the top 20 \(publish_top_n\)"):
        EvaluationConfig(k=10, recall_k=50, rules=ListRules(top_n=20))


def test_a_catalog_without_stock_columns_is_refused():

    with pytest.raises(ValueError, match=r"item catalog lacks columns \['in_stock', 'is_blocked'\]"):
        allowed_and_categories(np.array(["x"]), pd.DataFrame({"item_id": ["x"], "category": ["c"]}))


@pytest.mark.parametrize("value", ["-1", "inf", "nan"])
def test_an_invalid_signal_weight_is_refused_in_one_line_naming_the_variable_and_its_range(
    value, tmp_path, monkeypatch, capsys
):
    from pipelines.cli import main

    monkeypatch.setenv("RECFORGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RECFORGE_WEIGHT_CLICK", value)
    assert main(["status"]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert f"RECFORGE_WEIGHT_CLICK='{value}': must be a finite number >= 0" in error


def test_an_empty_or_repeated_candidate_list_is_refused(tmp_path):
    with pytest.raises(ValueError, match="train_candidates is empty"):
        candidate_factories(make_settings(tmp_path, train_candidates=[]))
    with pytest.raises(ValueError, match=r"names \['als'\] more than once"):
        candidate_factories(make_settings(tmp_path, train_candidates=["als", "popularity", "als"]))


def test_folds_carry_last_interaction_times_and_item_features_for_time_aware_models():
    features = pd.DataFrame({"category": ["c1", "c2"], "price": [1.0, 2.0], "created_at": [0.0, 0.0]}, index=["x", "y"])
    frame = pd.DataFrame(
        {
            "user_id": ["a", "a", "b", "b"],
            "item_id": ["x", "x", "y", "x"],
            "event_ts": [START + timedelta(days=d) for d in (0, 2, 1, 9)],
            "weight": 1.0,
        }
    )
    fold = global_time_folds(EventLog.from_frame(frame, 14, features), 1, 5, 5, 1)[0]  # cutoff at day 4
    last = dict(zip(zip(*fold.train.last_ts.nonzero(), strict=True), fold.train.last_ts.data, strict=True))
    day = (START + timedelta(days=2)).timestamp()
    assert last[(0, 0)] == day and fold.train.max_ts == day
    assert fold.train.item_features["category"].tolist() == ["c1", "c2"]
    model = RecentPopularityRecommender(window_days=0.5).fit(fold.train)
    scores = dict(zip(model.item_ids, model.item_scores, strict=True))
    assert scores["x"] > scores["y"]  # one user each, but a's x (day 2) is recent and b's y (day 1) is not


def test_settings_that_evaluate_deeper_than_the_stored_lists_are_refused(tmp_path):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"recall_k=50 look deeper than publish_top_n=30"):
        make_settings(tmp_path, publish_top_n=30)


def test_the_whole_log_is_built_once_for_every_candidate_and_the_final_fit(built):
    """Each candidate is asked whether it can fit the whole log before the winner is fitted on it."""
    data = load_evaluation_data(built)
    first = data.full_interactions()
    assert data.full_interactions() is first
    assert first.matrix.nnz == len({(u, i) for u, i in zip(data.log.users, data.log.items, strict=True)})
    ALSRecommender(factors=4, iterations=2).fit(first)  # a fit leaves the kept matrix as it was
    again = load_evaluation_data(built).full_interactions()
    assert (first.matrix != again.matrix).nnz == 0 and (first.last_ts != again.last_ts).nnz == 0
