"""The peer-library benchmark's own checks (benchmarks/peer_library.py), without the peer library: the
closed form it holds EASE's lists to, and the mapping of a peer's lists onto recforge's item indices."""

import numpy as np
import pandas as pd
import pytest

from models import algorithm
from models.columns import Columns
from models.dataset import Interactions
from tests.conftest import benchmark_script


@pytest.fixture(scope="module")
def bench():
    return benchmark_script("peer_library")


@pytest.fixture(scope="module")
def train() -> Interactions:
    """60 users x 120 items, 6 distinct items each on a skewed popularity: an asymmetric EASE weight matrix."""
    rng = np.random.default_rng(3)
    popularity = 1.0 / np.arange(1, 121)
    rows = [
        (f"u{u}", f"i{i}", 1.0, float(n))
        for u in range(60)
        for n, i in enumerate(rng.choice(120, 6, replace=False, p=popularity / popularity.sum()))
    ]
    return Interactions.from_frame(pd.DataFrame(rows, columns=[Columns.User, Columns.Item, Columns.Weight, "last_ts"]))


def test_recforge_ease_is_the_closed_form_and_the_check_tells_it_from_its_transpose(bench, train):
    users = np.arange(train.n_users)
    orders = bench.closed_form_orders(train, users, bench.RECFORGE_EASE_LAMBDA)
    ease = algorithm("ease")(regularization=bench.RECFORGE_EASE_LAMBDA).fit(train)
    items, _ = ease.recommend(users, 10)
    shares = bench.agreement(items, orders)
    assert shares["top10_equals_X·B"] == 1.0
    assert shares["top10_equals_X·Bᵀ"] < 0.75  # half the users get another top-10: the check can fail
    transposed = bench.agreement(orders["X·Bᵀ"], orders)
    assert transposed == {"top10_equals_X·B": shares["top10_equals_X·Bᵀ"], "top10_equals_X·Bᵀ": 1.0}


def test_a_peer_list_lands_on_recforges_indices_by_rank(bench):
    users, items = np.array(["u1", "u2"]), np.array(["a", "b", "c"])
    lists = pd.DataFrame({"user_id": ["u2", "u1", "u1"], "item_id": ["c", "b", "a"], "rank": [1, 2, 1]})
    matrix = bench.as_item_matrix(lists, users, items)
    assert matrix.shape == (2, bench.TOP_K)
    assert matrix[0, :3].tolist() == [0, 1, -1] and matrix[1, :2].tolist() == [2, -1]


def test_a_peer_list_naming_an_item_outside_the_split_is_refused(bench):
    lists = pd.DataFrame({"user_id": ["u1"], "item_id": ["zz"], "rank": [1]})
    with pytest.raises(SystemExit, match="outside the training data: not the same split"):
        bench.as_item_matrix(lists, np.array(["u1"]), np.array(["a"]))
