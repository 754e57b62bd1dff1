"""Every recommender passes the same contract on a tiny data set whose right answer is known.

The data: 40 users in two communities. Users 0-19 only touch items 0-9, users 20-39 only items
10-19 (category "c0" / "c1"). Each user walks five consecutive items of its community, one per
day, starting on a day spread over three weeks, so the data also has time and an order:
after item i comes item i + 1 (mod 10). A personalised model must recommend within the user's
community; each model's test class only supplies the model.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from models import (
    ALSRecommender,
    BM25ItemKNNRecommender,
    BPRRecommender,
    ContentALSRecommender,
    CosineItemKNNRecommender,
    EASERecommender,
    PopularityRecommender,
    RankerRecommender,
    RecentPopularityRecommender,
    Recommender,
    SASRecRecommender,
)
from models.dataset import Interactions

DAY = 86_400.0
T0 = 1_767_225_600.0  # 2026-01-01 UTC
N_USERS, COMMUNITY_SIZE, WALK = 40, 10, 5


def community_walks() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for user in range(N_USERS):
        base = 0 if user < N_USERS // 2 else COMMUNITY_SIZE
        start, first_day = rng.integers(0, COMMUNITY_SIZE), user % 20
        for step in range(WALK):
            item = base + (start + step) % COMMUNITY_SIZE
            rows.append((f"u{user:02d}", f"i{item:02d}", 1.0, T0 + (first_day + step) * DAY))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "weight", "last_ts"])


def catalog() -> pd.DataFrame:
    items = [f"i{i:02d}" for i in range(2 * COMMUNITY_SIZE)]
    return pd.DataFrame(
        {
            "item_id": items,
            "title": [f"{'red lamp' if i < COMMUNITY_SIZE else 'blue kettle'} {i}" for i in range(len(items))],
            "category": ["c0" if i < COMMUNITY_SIZE else "c1" for i in range(len(items))],
            "price": np.linspace(5.0, 50.0, len(items)),
        }
    )


def community_data() -> Interactions:
    return Interactions.from_frame(community_walks(), item_features=catalog(), catalog=catalog())


def community_of_items(data: Interactions, items: np.ndarray) -> np.ndarray:
    numbers = np.array([int(data.item_ids[i][1:]) for i in items.ravel()]).reshape(items.shape)
    return numbers // COMMUNITY_SIZE


class RecommenderContract:
    """What every recommender guarantees, whatever it learns."""

    def make(self) -> Recommender:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    def fitted(self) -> tuple[Recommender, Interactions]:
        data = community_data()
        return self.make().fit(data), data

    def test_fit_returns_the_fitted_model(self):
        model = self.make()
        assert model.fit(community_data()) is model and model.is_fitted

    def test_recommend_before_fit_is_an_error(self):
        with pytest.raises(RuntimeError, match="not fitted"):
            self.make().recommend(np.array([0]), 3)

    def test_unknown_user_index_is_refused_not_misread(self, fitted):
        model, data = fitted
        unknown = data.user_index(["nobody"])
        assert unknown.tolist() == [-1]
        with pytest.raises(ValueError, match="unknown users"):
            model.recommend(unknown, 3)

    def test_seen_items_are_never_recommended(self, fitted):
        model, data = fitted
        items, _ = model.recommend(np.arange(data.n_users), 5)
        seen = data.matrix.toarray() > 0
        for user, row in enumerate(items):
            assert not seen[user, row[row >= 0]].any()

    def test_disallowed_items_are_never_recommended(self, fitted):
        model, data = fitted
        allowed = np.ones(data.n_items, dtype=bool)
        allowed[:5] = False
        items, _ = model.recommend(np.arange(data.n_users), 8, allowed_items=allowed)
        assert not np.isin(items, np.arange(5)).any()

    def test_lists_are_full_sorted_and_without_repeats(self, fitted):
        model, data = fitted
        items, scores = model.recommend(np.arange(data.n_users), 6)
        assert (items >= 0).all()  # 15 unseen items per user: six are always available
        assert (np.diff(scores, axis=1) <= 1e-6).all()
        assert all(len(set(row)) == len(row) for row in items)

    def test_same_seed_gives_the_same_lists(self, fitted):
        model, data = fitted
        again = self.make().fit(community_data())
        users = np.arange(data.n_users)
        np.testing.assert_array_equal(model.recommend(users, 5)[0], again.recommend(users, 5)[0])

    def test_save_and_load_give_the_same_lists_and_scores(self, fitted, tmp_path):
        model, data = fitted
        loaded = Recommender.load(model.save(tmp_path / "m"))
        assert type(loaded) is type(model) and loaded.params() == model.params()
        users = np.arange(data.n_users)
        (items, scores), (loaded_items, loaded_scores) = model.recommend(users, 5), loaded.recommend(users, 5)
        np.testing.assert_array_equal(items, loaded_items)
        np.testing.assert_allclose(scores, loaded_scores, rtol=1e-5)

    def test_forgetting_a_user_removes_their_rows_and_leaves_the_others_lists_alone(self, fitted, tmp_path):
        """The saved model of a forgotten user holds no trace of their id, and everyone else's lists and
        scores are what they were (pipelines/privacy/forget.py rewrites registered bundles this way)."""
        model, data = fitted
        copy = Recommender.load(model.save(tmp_path / "before"))
        gone = str(data.user_ids[3])
        assert copy.forget_users([gone, "never-seen"]) == 1
        assert copy.forget_users([gone]) == 0  # idempotent
        reloaded = Recommender.load(copy.save(tmp_path / "after"))
        assert gone not in set(reloaded.user_ids.astype(str)) and len(reloaded.user_ids) == data.n_users - 1
        others = np.array([u for u in range(data.n_users) if u != 3])
        before_items, before_scores = model.recommend(others, 5)
        after_items, after_scores = reloaded.recommend(np.arange(len(others)), 5)
        np.testing.assert_array_equal(before_items, after_items)
        np.testing.assert_allclose(before_scores, after_scores, rtol=1e-5)

    def test_params_are_json_and_rebuild_the_same_model(self):
        model = self.make()
        params = json.loads(json.dumps(model.params()))
        assert type(model)(**params).params() == model.params()


class PersonalisedContract(RecommenderContract):
    """A personalised model must find the user's community."""

    def test_recommends_within_the_users_community(self, fitted):
        model, data = fitted
        items, _ = model.recommend(np.arange(data.n_users), 3)
        expected = (np.arange(data.n_users) >= N_USERS // 2).astype(int)[:, None]
        assert (community_of_items(data, items) == expected).mean() > 0.9

    def test_similar_items_come_from_the_same_community(self, fitted):
        model, data = fitted
        similar, _ = model.similar_items(np.array([0, 10]), 3)
        assert (community_of_items(data, similar[:1]) == 0).all()
        assert (community_of_items(data, similar[1:]) == 1).all()


class TestPopularity(RecommenderContract):
    def make(self):
        return PopularityRecommender()

    def test_everyone_gets_the_items_most_users_touched(self, fitted):
        model, data = fitted
        counts = (data.matrix.toarray() > 0).sum(axis=0)
        items, _ = model.recommend(np.arange(data.n_users), 1)
        unseen_best = [np.max(np.where(data.matrix[u].toarray().ravel() > 0, -1, counts)) for u in range(40)]
        np.testing.assert_array_equal(counts[items[:, 0]], unseen_best)

    def test_has_no_similar_items(self, fitted):
        with pytest.raises(NotImplementedError, match="no item embeddings"):
            fitted[0].similar_items(np.array([0]), 3)


class TestRecentPopularity(RecommenderContract):
    def make(self):
        return RecentPopularityRecommender(window_days=3)


class TestALS(PersonalisedContract):
    def make(self):
        return ALSRecommender(factors=4, iterations=15, regularization=1.0, alpha=1.0, random_state=1)


class TestALSContent(PersonalisedContract):
    def make(self):
        return ContentALSRecommender(
            factors=4, iterations=15, regularization=1.0, alpha=1.0, encoder="tfidf", random_state=1
        )


class TestBPR(PersonalisedContract):
    def make(self):
        return BPRRecommender(factors=8, iterations=200, learning_rate=0.05, random_state=1)


class TestAdamBPR(PersonalisedContract):
    def make(self):
        return BPRRecommender(optimizer="adam", factors=8, iterations=100, learning_rate=0.01, random_state=1)


class TestEASE(PersonalisedContract):
    def make(self):
        return EASERecommender(regularization=1.0)


class TestCosineItemKNN(PersonalisedContract):
    def make(self):
        return CosineItemKNNRecommender(neighbours=10)


class TestBM25ItemKNN(PersonalisedContract):
    def make(self):
        return BM25ItemKNNRecommender(neighbours=10)


class TestRanker(PersonalisedContract):
    def make(self):
        return RankerRecommender(
            label_days=4,
            label_windows=2,
            generators=["als", "itemknn_bm25", "popularity"],
            generator_params={"als": {"factors": 4, "iterations": 15, "regularization": 1.0, "alpha": 1.0}},
            candidates_per_generator=8,
            n_estimators=20,
            min_child_samples=5,
            random_state=1,
        )


class TestSASRec(PersonalisedContract):
    def make(self):
        return SASRecRecommender(
            max_len=8, embedding_dim=16, n_blocks=1, n_heads=1, dropout=0.0, epochs=60, learning_rate=0.01
        )

    def test_recommends_within_the_users_community(self, fitted):
        """Stricter than the contract: a sequential model's right answer is the walk's next item.

        Only the successor is ever a training target here, so slots 2 and 3 carry no signal
        and are not checked.
        """
        model, data = fitted
        items, _ = model.recommend(np.arange(data.n_users), 1)
        last = data.last_ts.toarray().argmax(axis=1)
        numbers = np.array([int(data.item_ids[i][1:]) for i in last])
        successor = numbers // COMMUNITY_SIZE * COMMUNITY_SIZE + (numbers % COMMUNITY_SIZE + 1) % COMMUNITY_SIZE
        recommended = np.array([int(data.item_ids[i][1:]) for i in items[:, 0]])
        assert (recommended == successor).mean() > 0.9

    def test_similar_items_come_from_the_same_community(self, fitted):
        """Stricter than the contract: an item's nearest embeddings are its walk neighbours (i - 1, i + 1)."""
        model, data = fitted
        items = np.arange(2 * COMMUNITY_SIZE)
        similar, _ = model.similar_items(items, 2)
        numbers = np.array([[int(data.item_ids[i][1:]) for i in row] for row in similar])
        base = items // COMMUNITY_SIZE * COMMUNITY_SIZE
        neighbours = np.stack([base + (items - 1) % COMMUNITY_SIZE, base + (items + 1) % COMMUNITY_SIZE], axis=1)
        found = (numbers[:, :, None] == neighbours[:, None, :]).any(axis=2)
        assert found.any(axis=1).all()  # every item has a walk neighbour among its two nearest
        assert found.all(axis=1).mean() >= 0.75  # and most have both (rare items are learnt less well)


def test_every_algorithm_declares_the_heavy_libraries_its_module_imports():
    """The registered MLflow model must install what the algorithm needs to load and rank on its own."""
    import inspect
    import re

    from models.base import _REGISTRY

    for name, cls in _REGISTRY.items():
        source = inspect.getsource(inspect.getmodule(cls))
        for library in ("lightgbm", "torch"):
            if re.search(rf"^\s*(import|from) {library}\b", source, re.M):
                declared = " ".join(getattr(cls, "pip_requirements", []))
                assert library in declared, f"{name} imports {library} but does not declare it in pip_requirements"
