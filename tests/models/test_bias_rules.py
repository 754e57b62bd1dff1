"""The mitigation rules of the lists: Steck's calibrated re-ranking and the seller cap, alone and with the others."""

import numpy as np
import pandas as pd
import pytest

from models.columns import Columns
from models.dataset import Interactions
from models.ease import EASERecommender
from models.evaluation.exposure import calibration_kl
from models.lists.ranked import CALIBRATION, ListRules, ListTrace, ranked_lists
from models.lists.rules import calibrated_order, capped_order, head_within_caps, seller_codes


def test_calibration_with_lambda_zero_keeps_the_ranking():
    ranked = np.array([[0, 1, 2, 3]])
    scores = np.array([[4, 3, 2, 1]], dtype=np.float32)
    target = np.array([[0.5, 0.5]])
    order = calibrated_order(ranked, scores, target, np.array([0, 0, 1, 1]), lam=0.0, head=2)
    assert order[0].tolist() == [0, 1, 2, 3]


def test_calibration_brings_the_users_other_category_into_the_head():
    # The user's history is half category 0, half category 1; the model ranks both 0s first.
    ranked = np.array([[0, 1, 2, 3]])
    scores = np.array([[4, 3, 2, 1]], dtype=np.float32)
    target = np.array([[0.5, 0.5]])
    order = calibrated_order(ranked, scores, target, np.array([0, 0, 1, 1]), lam=0.5, head=2)
    assert np.take_along_axis(ranked, order, axis=1)[0].tolist() == [0, 2, 1, 3]


def test_calibration_leaves_a_user_without_history_and_empty_slots_alone():
    ranked = np.array([[0, 1, -1], [1, 0, -1]])
    scores = np.array([[2, 1, -np.inf], [2, 1, -np.inf]], dtype=np.float32)
    target = np.array([[0.0, 0.0], [0.0, 1.0]])
    order = calibrated_order(ranked, scores, target, np.array([0, 1]), lam=0.9, head=3)
    reordered = np.take_along_axis(ranked, order, axis=1)
    assert reordered[0].tolist() == [0, 1, -1]
    assert reordered[1].tolist() == [1, 0, -1]  # category 1 (item 1) first, the -1 slot stays last


def test_capped_order_holds_two_caps_at_once_and_ignores_items_without_a_group():
    ranked = np.array([[0, 1, 2, 3, 4, 5]])
    sellers = np.array([0, 0, 0, -1, 1, 1])
    categories = np.array([0, 1, 0, 0, 1, 1])
    caps = [(sellers, 1), (categories, 2)]
    reordered = np.take_along_axis(ranked, capped_order(ranked, caps, head=3), axis=1)[0]
    assert reordered[:3].tolist() == [0, 3, 4]  # item 1 and 2 share seller 0 with item 0
    assert head_within_caps(reordered[None, :], caps, 3).all()
    assert sorted(reordered.tolist()) == list(range(6))


def test_seller_codes_are_none_without_a_seller_column_or_without_any_seller():
    catalog = pd.DataFrame({"item_id": ["a", "b"], "seller": [None, None]})
    assert seller_codes(np.array(["a", "b"]), catalog) is None
    assert seller_codes(np.array(["a"]), catalog.drop(columns="seller")) is None
    named = pd.DataFrame({"item_id": ["a", "b", "c"], "seller": ["s2", None, "s1"]})
    assert seller_codes(np.array(["c", "b", "a", "z"]), named).tolist() == [0, -1, 1, -1]


def test_ranked_lists_rejects_a_negative_seller_cap_or_lambda_outside_its_range():
    with pytest.raises(ValueError, match="seller_cap"):
        ListRules(seller_cap=-1)
    with pytest.raises(ValueError, match="calibration_lambda"):
        ListRules(calibration_lambda=1.5)


# --- on a real (tiny) model: 40 users with two-category tastes over 30 items of 3 categories and 3 sellers


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(7)
    n_items = 30
    categories = np.arange(n_items) % 3
    sellers = (np.arange(n_items) // 3) % 3  # seller 0 holds items 0-2, 9-11, ...: a seller spans categories
    rows = []
    for user in range(40):
        liked = rng.choice(3, size=2, replace=False)
        pool = np.flatnonzero(np.isin(categories, liked))
        for item in rng.choice(pool, size=8, replace=False):
            rows.append((f"u{user:02d}", f"i{item:02d}", float(rng.integers(1, 4))))
    frame = pd.DataFrame(rows, columns=[Columns.User, Columns.Item, Columns.Weight])
    interactions = Interactions.from_frame(frame, item_ids=np.array([f"i{i:02d}" for i in range(n_items)]))
    model = EASERecommender(regularization=10.0).fit(interactions)
    allowed = np.ones(n_items, dtype=bool)
    allowed[[4, 17]] = False  # blocked
    return model, allowed, categories, sellers


def lists(world, **rules):
    model, allowed, categories, sellers = world
    base = {"top_n": 12, "candidate_margin": 6, "category_cap": 0.5, "category_cap_head": 6, "cold_user_below": 1}
    trace = ListTrace()
    users = np.arange(len(model.user_ids))
    top = ranked_lists(model, users, ListRules(**{**base, **rules}), allowed, categories, trace=trace, sellers=sellers)
    return top, trace


def test_the_seller_cap_holds_in_the_head_with_the_category_cap_and_brings_back_no_blocked_item(world):
    model, allowed, categories, sellers = world
    plain, _ = lists(world)
    assert not head_within_caps(plain.ranked[:, :6], [(sellers, 2)], 6).all(), "the model alone breaks the cap"
    top, trace = lists(world, seller_cap=2)  # 3 sellers x 2 = the 6 head slots
    head = top.ranked[:, :6]
    assert (head >= 0).all()
    assert head_within_caps(head, [(sellers, 2), (categories, 3)], 6).all()
    assert not np.isin(top.ranked, [4, 17]).any()
    seen = model.seen.tocsr()
    for row, user_items in enumerate(top.ranked):
        assert not np.isin(user_items, seen.indices[seen.indptr[row] : seen.indptr[row + 1]]).any()
    stages = [name for name, _ in trace.stages]
    assert stages.index("seller_cap_top6") < stages.index("category_cap_top6")


def test_the_seller_cap_without_sellers_in_the_catalog_changes_nothing(world):
    model, allowed, categories, _ = world
    users = np.arange(len(model.user_ids))
    rules = ListRules(top_n=12, candidate_margin=6, category_cap=0.5, category_cap_head=6, cold_user_below=1)
    capped = ListRules(**{**rules.__dict__, "seller_cap": 1})
    plain = ranked_lists(model, users, rules, allowed, categories)
    without = ranked_lists(model, users, capped, allowed, categories, sellers=None)
    assert np.array_equal(plain.ranked, without.ranked)


def test_calibrated_reranking_lowers_miscalibration_keeps_the_caps_and_is_traced(world):
    model, allowed, categories, _ = world
    plain, _ = lists(world)
    calibrated, trace = lists(world, calibration_lambda=0.9)
    kl_plain = np.nanmean(calibration_kl(plain.ranked, model.seen, categories, 6))
    kl_calibrated = np.nanmean(calibration_kl(calibrated.ranked, model.seen, categories, 6))
    assert kl_calibrated < kl_plain
    assert CALIBRATION in [name for name, _ in trace.stages]
    assert head_within_caps(calibrated.ranked[:, :6], [(categories, 3)], 6).all()
    assert not np.isin(calibrated.ranked, [4, 17]).any()


def test_the_manifest_names_the_mitigation_rules_only_when_on():
    assert CALIBRATION not in ListRules().manifest()["applied"]
    applied = ListRules(calibration_lambda=0.3, seller_cap=2).manifest()["applied"]
    assert applied.index(CALIBRATION) < applied.index("seller_cap_top10") < applied.index("category_cap_top10")
