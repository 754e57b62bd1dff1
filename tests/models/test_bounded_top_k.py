"""The bounded search (models/bounded_top_k.py) gives exactly what scoring every item gives, and scores less."""

import numpy as np
import pytest
import scipy.sparse as sp

from models.als import ALSRecommender
from models.base import top_k
from models.bounded_top_k import bounded_top_k
from models.factorization import BOUNDED_MIN_ITEMS


def every_item(users, items, k, seen, allowed):
    """The reference: the whole product, seen items out, the exact selection (ties by item index)."""
    dense = (users @ items.T).astype(np.float32)
    if seen is not None:
        dense[seen.nonzero()] = -np.inf
    return top_k(dense, k, allowed)


def skewed_catalog(n_users: int, n_items: int, dims: int = 8, seed: int = 0):
    """Integer factors (exact float32 products, many ties) with a long tail of short item vectors.

    Hostile on purpose: zero vectors (a tie at 0 for every user), duplicated items, users with a zero
    vector or negative tastes, a user whose answer needs the whole catalog.
    """
    rng = np.random.default_rng(seed)
    directions = rng.integers(-3, 4, (n_items, dims))
    length = np.maximum(1, (40 / np.arange(1, n_items + 1) ** 0.7).astype(int))  # popular = long
    items = (directions * rng.permutation(length)[:, None]).astype(np.float32)
    items[rng.choice(n_items, n_items // 20, replace=False)] = 0  # never-interacted items
    items[5] = items[7]  # identical items: a tie broken by index
    users = rng.integers(-2, 3, (n_users, dims)).astype(np.float32)
    users[0] = 0  # every score 0
    users[1] = -users[2]  # opposite tastes
    seen = sp.random(n_users, n_items, density=0.01, random_state=seed, format="csr")
    seen.data[:] = 1
    return users, items, seen


@pytest.mark.parametrize(("k", "block"), [(10, 50_000), (40, 7_000), (150, 200_000)])
@pytest.mark.parametrize("masked", [False, True], ids=["all-allowed", "masked"])
def test_the_bounded_search_equals_scoring_every_item(k, block, masked):
    users, items, seen = skewed_catalog(300, 4_000)
    allowed = np.random.default_rng(3).random(len(items)) > 0.1 if masked else None
    got = bounded_top_k(users, items, k, seen, allowed, block)
    expected = every_item(users, items, k, seen, allowed)
    assert np.array_equal(got[0], expected[0])
    assert np.array_equal(got[1], expected[1])


def test_rows_with_fewer_allowed_items_than_k_and_no_seen_matrix():
    users, items, _ = skewed_catalog(50, 3_000, seed=1)
    allowed = np.zeros(len(items), dtype=bool)
    allowed[np.random.default_rng(2).choice(len(items), 30, replace=False)] = True  # 30 < k
    got = bounded_top_k(users, items, 60, None, allowed, 10_000)
    expected = every_item(users, items, 60, None, allowed)
    assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert (got[0][:, 30:] == -1).all()


def test_float_factors_give_the_same_items_as_scoring_every_item():
    rng = np.random.default_rng(4)
    popularity = 1 / np.arange(1, 5_001) ** 0.8
    items = (rng.standard_normal((5_000, 32)) * popularity[:, None] * 5).astype(np.float32)
    users = rng.standard_normal((400, 32)).astype(np.float32)
    got = bounded_top_k(users, items, 100, None, None, 100_000)
    expected = every_item(users, items, 100, None, None)
    assert np.array_equal(got[0], expected[0])
    assert np.allclose(got[1], expected[1], rtol=1e-5)


def test_short_vectors_are_left_unscored(monkeypatch):
    """The point of it: on a long-tailed catalog most users never score most items."""
    import models.bounded_top_k

    users, items, seen = skewed_catalog(300, 4_000)
    scored = []

    def counting(dense, k, allowed):
        scored.append(dense.size)
        return top_k(dense, k, allowed)

    monkeypatch.setattr(models.bounded_top_k, "top_k", counting)
    bounded_top_k(users, items, 10, seen, None, 50_000)
    assert sum(scored) < 0.5 * users.shape[0] * items.shape[0]


def test_recommend_uses_it_for_large_catalogs_with_the_answer_of_every_item():
    """ALS's recommend (publication, evaluation) against the base class's block loop on the same model."""
    users, items, seen = skewed_catalog(120, BOUNDED_MIN_ITEMS, seed=5)
    model = ALSRecommender()
    model.user_ids = np.array([f"u{i}" for i in range(len(users))], dtype=object)
    model.item_ids = np.array([f"i{i}" for i in range(len(items))], dtype=object)
    model.seen, model.user_factors, model.item_factors, model.is_fitted = seen, users, items, True
    rows = np.array([7, 0, 119, 3, 3])  # any order, repeats
    allowed = np.arange(len(items)) % 9 != 0
    for kwargs in ({}, {"allowed_items": allowed}, {"filter_seen": False}):
        bounded = model.recommend(rows, 150, **kwargs)
        whole = model.recommend(rows, 150, batch_size=2, **kwargs)  # an explicit batch size: every item scored
        assert np.array_equal(bounded[0], whole[0]) and np.array_equal(bounded[1], whole[1])


def test_the_pilot_gives_an_unprunable_catalog_one_pass_over_every_item():
    """Item vectors of one length bound nothing: the first pass is the whole catalog, no second pass."""
    from models.bounded_top_k import _ItemSubset, _probe_width

    rng = np.random.default_rng(6)
    items = rng.standard_normal((6_000, 16)).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    users = rng.standard_normal((300, 16)).astype(np.float32)
    norms = np.ones(len(items))
    search = _ItemSubset(items, np.arange(len(items)), None, None, 100_000)
    assert _probe_width(users, 20, search, norms) == len(items)
    skewed_users, skewed_items, _ = skewed_catalog(300, 6_000)
    skewed_norms = np.sort(np.linalg.norm(skewed_items, axis=1))[::-1]
    by_norm = np.argsort(-np.linalg.norm(skewed_items, axis=1), kind="stable")
    skewed = _ItemSubset(skewed_items, by_norm, None, None, 100_000)
    assert _probe_width(skewed_users, 20, skewed, skewed_norms) < len(skewed_items)
