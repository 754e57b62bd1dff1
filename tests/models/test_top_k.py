"""``top_k`` (what ``recommend`` selects with) equals a full sort of each row, ties by item index,
on both paths: the compiled one (models/_topk.c) and numpy's."""

import numpy as np
import pytest

import models.base
from models.base import top_k


def sorted_top(dense: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    columns = np.tile(np.arange(dense.shape[1]), (dense.shape[0], 1))
    order = np.lexsort((columns, -dense), axis=1)[:, :k]
    scores = np.take_along_axis(dense, order, axis=1)
    order[~np.isfinite(scores)] = -1
    return order, scores


def hostile_scores(items: int, k: int, rows: int = 40) -> np.ndarray:
    rng = np.random.default_rng(items)
    dense = rng.standard_normal((rows, items)).astype(np.float32)
    dense[:, rng.random(items) < 0.3] = -np.inf  # excluded items
    dense[0] = -np.inf  # nothing allowed
    dense[1, : items - 5] = -np.inf  # fewer allowed items than k
    dense[2] = np.round(dense[2], 1)  # many ties
    dense[3, rng.choice(items, 10 * k)] = 7.0  # ties at the top, spread over every chunk
    return dense


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "numpy"])
@pytest.mark.parametrize(("items", "k"), [(20_000, 100), (5_000, 150), (300, 50), (40, 60)])
def test_top_k_equals_sorting_whole_rows_with_ties_empty_and_short_rows(items, k, compiled):
    dense = hostile_scores(items, k)
    expected_items, expected_scores = sorted_top(dense, min(k, items))
    got_items, got_scores = top_k(dense.copy(), k, compiled=compiled)
    assert np.array_equal(got_items, expected_items)
    assert np.array_equal(got_scores, expected_scores)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "numpy"])
@pytest.mark.parametrize("items", [3_000, 200])  # a large catalog, and a small one that sorts whole rows
def test_an_allowed_mask_and_nan_scores_leave_those_items_out_on_both_paths(compiled, items):
    rows, k = 100, 20  # 100 rows: the compiled path shares them among its threads
    dense = hostile_scores(items, k, rows)
    dense[4, ::7] = np.nan  # a broken score is never recommended
    allowed = np.random.default_rng(1).random(items) > 0.2
    expected = dense.copy()
    expected[:, ~allowed] = -np.inf
    expected[np.isnan(expected)] = -np.inf
    expected_items, expected_scores = sorted_top(expected, k)
    got_items, got_scores = top_k(dense.copy(), k, allowed, compiled=compiled)
    assert np.array_equal(got_items, expected_items)
    assert np.array_equal(got_scores, expected_scores)
    assert not np.isin(got_items[got_items >= 0], np.flatnonzero(~allowed)).any()


def test_the_compiled_selection_is_built_and_refuses_mismatched_buffers():
    """`make setup` compiles models/_topk.c; without it every test above would test numpy twice."""
    select = models.base._compiled_top_k
    assert select is not None, "models/_topk.c was not compiled: reinstall with a C compiler (make setup)"
    scores, items, top = np.zeros((2, 10), np.float32), np.zeros((2, 3), np.int64), np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="buffer sizes do not match"):
        select(scores, 2, 11, 3, None, items, top)  # says 11 columns, holds 10
    with pytest.raises(ValueError, match="buffer sizes do not match"):
        select(scores, 2, 10, 3, np.zeros(9, np.float32), items, top)  # penalty one short
    with pytest.raises(ValueError, match="k >= 1"):
        select(scores, 2, 10, 0, None, items, top)


def test_a_forked_child_selects_with_threads_after_the_parent_used_its_pool(monkeypatch):
    """The parent's pool has no threads in a forked child; the child gets a pool of its own instead of waiting."""
    import multiprocessing

    if models.base._compiled_top_k is None:
        pytest.skip("the compiled selection is not built here")
    monkeypatch.setattr(models.base, "TOP_K_THREADS", 2)
    models.base._selection_pool.cache_clear()
    dense = hostile_scores(20_000, 100, rows=200)
    expected = top_k(dense.copy(), 100)  # the parent's pool, threads and all
    with multiprocessing.get_context("fork").Pool(1) as child:
        got = child.apply_async(top_k, (dense.copy(), 100)).get(timeout=60)
    assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    models.base._selection_pool.cache_clear()  # a pool of TOP_K_THREADS as the module sets it, for later tests
