"""Model contract: every recommender passes the same checks on a tiny data set with a known answer."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from models import ALSRecommender, PopularityRecommender, Recommender
from models.dataset import Interactions
from models.metrics import calc_metrics, hits_matrix, ndcg_at_k


def two_communities() -> Interactions:
    """Users 0-19 like items 0-9, users 20-39 like items 10-19; item 0 and 10 are the most popular."""
    rng = np.random.default_rng(0)
    rows = []
    for user in range(40):
        group = 0 if user < 20 else 10
        liked = [group] + list(rng.choice(np.arange(group + 1, group + 10), size=4, replace=False))
        rows += [(f"u{user:02d}", f"i{item:02d}", 1.0) for item in liked]
    return Interactions.from_frame(pd.DataFrame(rows, columns=["user_id", "item_id", "weight"]))


class RecommenderContract:
    def make(self) -> Recommender:
        raise NotImplementedError

    def test_fit_returns_the_fitted_model(self):
        model = self.make()
        assert model.fit(two_communities()) is model and model.is_fitted

    def test_recommend_before_fit_is_an_error(self):
        with pytest.raises(RuntimeError, match="not fitted"):
            self.make().recommend(np.array([0]), 3)

    def test_seen_items_are_never_recommended(self):
        data = two_communities()
        model = self.make().fit(data)
        items, _ = model.recommend(np.arange(data.n_users), 5)
        seen = data.matrix.toarray() > 0
        for user, row in enumerate(items):
            assert not seen[user, row[row >= 0]].any()

    def test_disallowed_items_are_never_recommended(self):
        data = two_communities()
        model = self.make().fit(data)
        allowed = np.ones(data.n_items, dtype=bool)
        allowed[:5] = False
        items, _ = model.recommend(np.arange(data.n_users), 8, allowed_items=allowed)
        assert not np.isin(items, np.arange(5)).any()

    def test_scores_are_sorted_and_lists_have_no_repeats(self):
        data = two_communities()
        items, scores = self.make().fit(data).recommend(np.arange(data.n_users), 6)
        assert (np.diff(scores, axis=1) <= 1e-6).all()
        for row in items:
            valid = row[row >= 0]
            assert len(set(valid)) == len(valid)

    def test_save_and_load_give_the_same_lists(self, tmp_path):
        data = two_communities()
        model = self.make().fit(data)
        loaded = Recommender.load(model.save(tmp_path / "m"))
        assert type(loaded) is type(model)
        np.testing.assert_array_equal(model.recommend(np.arange(10), 5)[0], loaded.recommend(np.arange(10), 5)[0])


class TestPopularity(RecommenderContract):
    def make(self):
        return PopularityRecommender()

    def test_everyone_gets_the_most_popular_unseen_items(self):
        data = two_communities()
        model = self.make().fit(data)
        items, _ = model.recommend(np.array([0]), 1)
        assert data.item_ids[items[0, 0]] == "i10"  # i00 is seen by user 0; i10 is the other top item


class TestALS(RecommenderContract):
    def make(self):
        return ALSRecommender(factors=4, iterations=15, regularization=1.0, alpha=1.0, random_state=1)

    def test_recommends_within_the_users_community(self):
        data = two_communities()
        model = self.make().fit(data)
        items, _ = model.recommend(np.arange(data.n_users), 3)
        community = np.array([int(data.item_ids[i][1:]) // 10 for i in items.ravel()]).reshape(items.shape)
        expected = (np.arange(data.n_users) >= 20).astype(int)[:, None]
        assert (community == expected).mean() > 0.9

    def test_similar_items_come_from_the_same_community(self):
        data = two_communities()
        model = self.make().fit(data)
        similar, _ = model.similar_items(np.array([0, 10]), 3)
        assert all(int(data.item_ids[i][1:]) < 10 for i in similar[0])
        assert all(int(data.item_ids[i][1:]) >= 10 for i in similar[1])


def test_ndcg_is_one_for_a_perfect_list_and_zero_for_a_miss():
    relevant = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 0, 1, 0]]))
    perfect = np.array([[0, 1], [2, 3]])
    miss = np.array([[2, 3], [0, 1]])
    n_rel = np.array([2, 1])
    np.testing.assert_allclose(ndcg_at_k(hits_matrix(perfect, relevant), n_rel, 2), [1.0, 1.0])
    np.testing.assert_allclose(ndcg_at_k(hits_matrix(miss, relevant), n_rel, 2), [0.0, 0.0])


def test_ndcg_discounts_a_hit_at_rank_two():
    relevant = sp.csr_matrix(np.array([[0, 1, 0]]))
    value = ndcg_at_k(hits_matrix(np.array([[0, 1]]), relevant), np.array([1]), 2)
    np.testing.assert_allclose(value, [1 / np.log2(3)])


def test_calc_metrics_ignores_users_without_held_out_items_and_handles_empty_slots():
    relevant = sp.csr_matrix(np.array([[1, 0, 0], [0, 0, 0]]))
    recommended = np.array([[0, -1], [1, 2]])
    metrics = calc_metrics(recommended, relevant, ndcg_k=2, recall_k=2)
    assert {key: metrics[key] for key in ("ndcg_at_2", "recall_at_2", "n_eval_users")} == {
        "ndcg_at_2": 1.0,
        "recall_at_2": 1.0,
        "n_eval_users": 1,
    }
