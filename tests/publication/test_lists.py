"""The list rules of a publication: MMR, the cold-user blend, reasons. Unit cases whose answer is known,
then the same rules on the lists of a real trained champion."""

import numpy as np
import pandas as pd
import pytest

from models.lists.ranked import ListRules, PopularityOrder, item_vectors
from models.lists.rules import head_within_cap, history_anchors, mmr_order, popularity_blend, unit_vectors
from models.lists.stored import build_lists
from pipelines.publication.publish import load_champion, read_items, read_purchases
from tests.conftest import copy_home

# Two tight clusters of items: 0-2 point one way, 3-5 the other.
CLUSTERED = np.array([[1, 0], [1, 0.05], [1, -0.05], [0, 1], [0.05, 1], [-0.05, 1]], dtype=np.float32)


@pytest.mark.parametrize("seed", range(5))
def test_a_cold_users_popular_candidates_are_the_filtered_popularity_order_read_per_category(seed):
    """PopularityOrder.first reads a few items per category; the answer is that of filtering the whole order
    (categories, with an unknown -1, many popularity ties, some items not allowed, users with and without history)."""
    rng = np.random.default_rng(seed)
    categories = rng.integers(-1, 12, 2_000)
    popularity = rng.integers(0, 30, 2_000)
    popular = np.argsort(-popularity, kind="stable")
    popular = popular[rng.random(2_000)[popular] > 0.1]
    order = PopularityOrder.of(popular, categories)
    for _ in range(40):
        history = rng.choice(2_000, int(rng.integers(0, 5)), replace=False)
        skip = np.concatenate([history, rng.choice(2_000, int(rng.integers(0, 30)), replace=False)])
        own = np.unique(categories[history]) if len(history) else None
        width = int(rng.integers(1, 120))
        takeable = ~np.isin(popular, skip) & (np.isin(categories[popular], own) if own is not None else True)
        assert order.first(own, skip, width).tolist() == popular[takeable][:width].tolist()


def test_mmr_with_lambda_one_keeps_the_ranking():
    ranked = np.array([[0, 1, 2, 3, 4, 5]])
    scores = np.array([[6, 5, 4, 3, 2, 1]], dtype=np.float32)
    order = mmr_order(ranked, scores, CLUSTERED, lam=1.0)
    assert order[0].tolist() == [0, 1, 2, 3, 4, 5]


def test_mmr_alternates_between_clusters_when_diversity_weighs_in():
    ranked = np.array([[0, 1, 2, 3, 4, 5]])
    scores = np.array([[6, 5, 4, 3, 2, 1]], dtype=np.float32)
    reordered = np.take_along_axis(ranked, mmr_order(ranked, scores, CLUSTERED, lam=0.5), axis=1)[0]
    assert reordered[0] == 0, "the first pick is the most relevant item"
    assert reordered[1] == 3, "the second is the best item of the other cluster"
    assert sorted(reordered.tolist()) == [0, 1, 2, 3, 4, 5]


def test_mmr_leaves_empty_slots_at_the_tail():
    ranked = np.array([[2, 0, 4, -1, -1]])
    scores = np.array([[3, 2, 1, -np.inf, -np.inf]], dtype=np.float32)
    reordered = np.take_along_axis(ranked, mmr_order(ranked, scores, CLUSTERED, lam=0.5), axis=1)[0]
    assert reordered[:3].tolist() == [2, 4, 0] and reordered[3:].tolist() == [-1, -1]


BLEND = {
    "model_items": np.array([5, 4, -1]),
    "model_scores": np.array([0.9, 0.1, -np.inf], dtype=np.float32),
    "history": np.array([0]),  # category 0 is the user's
    "popular_items": np.array([1, 0, 3, 2, 4, 5]),  # by descending popularity
    "popularity": np.array([90, 100, 10, 80, 5, 1], dtype=np.float32),
    "categories": np.array([0, 0, 0, 1, 1, 1]),
    "width": 3,
}


def test_a_blend_without_popularity_weight_is_the_model_ranking():
    items, scores, from_popularity = popularity_blend(**BLEND, weight=0.0)
    assert items[:2].tolist() == [5, 4] and not from_popularity[:2].any()


def test_a_popularity_heavy_blend_brings_popular_items_of_the_users_categories_only():
    items, scores, from_popularity = popularity_blend(**BLEND, weight=0.8)
    # 1 and 2 are popular in category 0 (0 itself is history); 3 is popular but not in the user's categories.
    assert items.tolist() == [1, 5, 2]
    assert from_popularity.tolist() == [True, False, True]
    assert np.all(np.diff(scores) <= 0)


def test_the_history_item_closest_to_a_recommendation_is_its_anchor_above_the_threshold():
    ranked = np.array([[1, 4, -1]])
    anchors = history_anchors(ranked, [np.array([0, 3])], CLUSTERED, min_similarity=0.9)
    assert anchors.tolist() == [[0, 3, -1]]
    assert history_anchors(ranked, [np.array([0])], CLUSTERED, min_similarity=0.9).tolist() == [[0, -1, -1]]


# --- on a real champion


@pytest.fixture(scope="module")
def champion(published, tmp_path_factory):
    settings = copy_home(published, tmp_path_factory.mktemp("rules") / "home")
    model, _ = load_champion(settings)
    return settings, model, read_items(settings), read_purchases(settings)


def lists_with(champion, **overrides):
    settings, model, items, purchased = champion
    rules = ListRules(**{**ListRules.from_settings(settings).__dict__, **overrides})
    return build_lists(model, items, rules, purchased)[0]


def histories(model) -> dict[str, set[str]]:
    seen = model.seen.tocsr()
    return {
        str(user): set(model.item_ids[seen.indices[seen.indptr[row] : seen.indptr[row + 1]]].astype(str))
        for row, user in enumerate(model.user_ids)
    }


def test_only_cold_users_get_popular_items_and_those_are_in_their_categories(champion):
    settings, model, items, _ = champion
    recs = lists_with(champion, cold_user_below=8)
    category = items.set_index("item_id")["category"]
    history = histories(model)
    cold = {user for user, seen in history.items() if len(seen) < 8}
    popular = recs[recs["reason"] == "popular"]
    assert cold and len(popular), "the tiny world should have cold users whose blend brings popular items"
    assert set(popular["user_id"]) <= cold
    for user, item in zip(popular["user_id"], popular["item_id"], strict=True):
        assert category[item] in {category[i] for i in history[user]}


def test_a_similar_to_reason_names_a_history_item_close_to_the_recommendation(champion):
    settings, model, _, _ = champion
    recs = lists_with(champion, reason_min_similarity=0.3)
    explained = recs[recs["reason"].str.startswith("similar_to:")]
    assert len(explained), "an ALS champion should explain some items by the user's history"
    vectors = unit_vectors(model.item_embeddings)
    row = {item: i for i, item in enumerate(model.item_ids.astype(str))}
    history = histories(model)
    sample = explained.sample(50, random_state=0)
    for user, item, reason in zip(sample["user_id"], sample["item_id"], sample["reason"], strict=True):
        anchor = reason.removeprefix("similar_to:")
        assert anchor in history[user]
        assert vectors[row[item]] @ vectors[row[anchor]] >= 0.3 - 1e-6


def test_without_a_reachable_similarity_every_model_item_is_explained_as_model(champion):
    recs = lists_with(champion, reason_min_similarity=1.0, cold_user_below=0)
    assert set(recs["reason"]) == {"model"}


def mean_top10_similarity(recs: pd.DataFrame, model) -> float:
    vectors = unit_vectors(item_vectors(model))
    row = {item: i for i, item in enumerate(model.item_ids.astype(str))}
    top = recs[recs["rank"] <= 10]
    values = []
    for _, group in top.groupby("user_id"):
        block = vectors[[row[i] for i in group["item_id"]]]
        sims = block @ block.T
        values.append((sims.sum() - np.trace(sims)) / (len(block) * (len(block) - 1)))
    return float(np.mean(values))


def test_mmr_makes_lists_more_diverse_and_the_category_cap_still_holds(champion):
    settings, model, items, _ = champion
    plain = lists_with(champion)
    diverse = lists_with(champion, mmr_enabled=True, mmr_lambda=0.5)
    assert mean_top10_similarity(diverse, model) < mean_top10_similarity(plain, model) - 0.02
    codes = {item: code for code, item in enumerate(model.item_ids.astype(str))}
    categories = pd.factorize(items.set_index("item_id").reindex(model.item_ids)["category"])[0]
    ranked = np.full((diverse["user_id"].nunique(), settings.publish_top_n), -1)
    for row, (_, group) in enumerate(diverse.groupby("user_id")):
        ranked[row, : len(group)] = [codes[i] for i in group.sort_values("rank")["item_id"]]
    assert head_within_cap(ranked, categories, settings.category_cap, settings.category_cap_head).all()


def test_an_item_bought_after_the_models_snapshot_is_not_recommended_back(champion):
    settings, model, items, purchased = champion
    recs = lists_with(champion)
    user, item = recs.iloc[0]["user_id"], recs.iloc[0]["item_id"]
    bought_since = pd.concat([purchased, pd.DataFrame({"user_id": [user], "item_id": [item]})], ignore_index=True)
    rules = ListRules.from_settings(settings)
    again = build_lists(model, items, rules, bought_since)[0]
    assert item not in set(again.loc[again["user_id"] == user, "item_id"])
    assert len(again[again["user_id"] == user]) == len(recs[recs["user_id"] == user])


def test_published_lists_hold_the_seller_cap_and_calibration_with_the_category_cap_and_no_blocked_item(champion):
    """The mitigation rules in the lists publication stores: the seller cap holds in the top 10, calibration
    brings the lists' category mix closer to the users' histories, and the other rules still hold."""
    from models.evaluation.exposure import calibration_kl
    from models.lists.rules import head_within_caps

    settings, model, items, _ = champion
    assert items["seller"].notna().all(), "the simulator gives every catalog item a seller"
    codes = {item: code for code, item in enumerate(model.item_ids.astype(str))}
    aligned = items.set_index("item_id").reindex(model.item_ids)
    categories = pd.factorize(aligned["category"])[0]
    sellers = pd.factorize(aligned["seller"])[0]
    blocked = set(items.loc[items["is_blocked"] | ~items["in_stock"], "item_id"])

    def matrix(recs):
        ranked = np.full((len(model.user_ids), settings.publish_top_n), -1)
        rows = pd.Index(model.user_ids.astype(str)).get_indexer(recs["user_id"])
        ranked[rows, recs["rank"].to_numpy() - 1] = [codes[i] for i in recs["item_id"]]
        return ranked

    plain, capped = lists_with(champion), lists_with(champion, seller_cap=2, calibration_lambda=0.6)
    head = settings.category_cap_head
    assert not head_within_caps(matrix(plain), [(sellers, 2)], head).all(), "without the cap some seller floods"
    per_category = max(1, int(np.floor(settings.category_cap * head)))
    assert head_within_caps(matrix(capped), [(sellers, 2), (categories, per_category)], head).all()
    assert not set(capped["item_id"]) & blocked
    kl = [np.nanmean(calibration_kl(matrix(r), model.seen, categories, head)) for r in (plain, capped)]
    assert kl[1] < kl[0]


class FixedRanking:
    """A model stand-in that ranks every user's items in one fixed order (what apply_category_cap asks of a model)."""

    def __init__(self, order: np.ndarray):
        self.order, self.item_ids = order, np.arange(len(order))
        self.depths: list[int] = []

    def recommend(self, users, k, allowed_items=None, seen=None):
        self.depths.append(k)
        ranked = np.tile(self.order[:k], (len(users), 1))
        return ranked, np.tile(-np.arange(k, dtype=np.float32), (len(users), 1))


def test_a_head_too_uniform_is_filled_from_as_deep_as_it_takes_and_equals_the_whole_catalogs_capped_order():
    """All items but six are one category: the head's 4 + 3 + 3 (cap 0.4 of 10) needs items ranked 100-102
    (found 32x deep) and 1,500-1,502 (only in the whole catalog); a user short at no depth stops early."""
    from models.lists.ranked import Candidates, apply_category_cap
    from models.lists.rules import category_capped_order

    categories = np.zeros(2_000, dtype=np.int64)
    categories[100:103], categories[1_500:1_503] = 1, 2
    model = FixedRanking(np.arange(2_000))
    rules = ListRules(top_n=10, candidate_margin=0, category_cap=0.4, category_cap_head=10)
    ranked, scores = model.recommend([0], 10)
    candidates = Candidates(ranked, scores, np.zeros(ranked.shape, dtype=np.int8))
    apply_category_cap(model, np.array([0]), candidates, None, None, categories, rules)
    assert candidates.ranked[0].tolist() == [0, 1, 2, 3, 100, 101, 102, 1_500, 1_501, 1_502]
    whole = np.arange(2_000)[None, :]
    capped = np.take_along_axis(whole, category_capped_order(whole, categories, cap=0.4, head=10), axis=1)
    assert candidates.ranked[0].tolist() == capped[0, :10].tolist()
    assert model.depths == [10, 40, 320, 2_000]  # the first call is the test's own
