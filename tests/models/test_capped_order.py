"""The caps' greedy walk on both paths: the compiled one (models/_capped.c) and Python's, which define it."""

import numpy as np
import pytest

from models.lists import rules
from models.lists.rules import PreparedCaps, capped_order, category_capped_order, head_within_caps


def random_lists(rng, n_rows: int, width: int, n_items: int) -> np.ndarray:
    """Rows of distinct items, each with a valid prefix of random length and -1 after it (as candidates are)."""
    ranked = np.full((n_rows, width), -1, dtype=np.int64)
    for row in range(n_rows):
        n = int(rng.integers(0, width + 1))
        ranked[row, :n] = rng.choice(n_items, size=n, replace=False)
    return ranked


@pytest.mark.parametrize("seed", range(6))
def test_the_compiled_walk_orders_every_row_as_the_python_walk_does(seed):
    rng = np.random.default_rng(seed)
    n_items, width = 300, int(rng.integers(2, 60))
    ranked = random_lists(rng, 400, width, n_items)
    categories = rng.integers(0, int(rng.integers(1, 8)), n_items)
    sellers = np.where(rng.random(n_items) < 0.3, -1, rng.integers(0, int(rng.integers(1, 40)), n_items))
    head = int(rng.integers(0, width + 3))
    for caps in ([(categories, int(rng.integers(0, 4)))], [(sellers, 1), (categories, 2)], [(sellers, 0)]):
        python = capped_order(ranked, caps, head, compiled=False)
        assert np.array_equal(capped_order(ranked, caps, head), python)
        assert np.array_equal(capped_order(ranked, PreparedCaps.of(caps), head), python)
        assert np.array_equal(capped_order(ranked, PreparedCaps.of(caps), head, compiled=False), python)
    for cap in (0.2, 0.5, 1.0):
        python = category_capped_order(ranked, categories, cap, head, compiled=False)
        assert np.array_equal(category_capped_order(ranked, categories, cap, head), python)
    order = capped_order(ranked, [(sellers, 1), (categories, 2)], head)
    assert (np.sort(order, axis=1) == np.arange(width)).all()  # a permutation of every row


def test_a_capped_head_holds_its_caps_where_the_list_allows_it():
    rng = np.random.default_rng(7)
    ranked = random_lists(rng, 200, 40, 500)
    ranked[:, :] = np.where(ranked < 0, rng.permutation(500)[:40], ranked)  # every row full
    caps = [(rng.integers(0, 5, 500), 3), (rng.integers(-1, 20, 500), 2)]
    reordered = np.take_along_axis(ranked, capped_order(ranked, caps, head=10), axis=1)
    assert head_within_caps(reordered, caps, 10).mean() > 0.95


def test_the_compiled_walk_refuses_buffers_that_do_not_match():
    if rules._compiled_capped_order is None:
        pytest.skip("models/_capped.c not compiled")  # the next test fails then, saying so
    walk = rules._compiled_capped_order
    groups, sizes, limits = np.zeros((1, 5), np.int64), np.ones(1, np.int64), np.ones(1, np.int64)
    ranked, out = np.array([[0, 7]], np.int64), np.empty((1, 2), np.int64)
    with pytest.raises(ValueError, match="item index is not below n_items"):
        walk(ranked, 1, 2, groups, 1, 5, sizes, limits, 2, out)
    with pytest.raises(ValueError, match="group code is not below"):
        walk(np.array([[0, 1]], np.int64), 1, 2, groups + 3, 1, 5, sizes, limits, 2, out)
    with pytest.raises(ValueError, match="buffer sizes do not match"):
        walk(ranked, 1, 3, groups, 1, 5, sizes, limits, 2, out)
    with pytest.raises(ValueError, match="must hold int64"):
        walk(ranked.astype(np.int32), 1, 2, groups, 1, 5, sizes, limits, 2, out)


def test_the_compiled_walk_is_built():
    """`make setup` compiles models/_capped.c; without it the comparisons above would test Python twice."""
    assert rules._compiled_capped_order is not None, "models/_capped.c was not compiled: reinstall (make setup)"
