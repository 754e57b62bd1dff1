"""``top_k`` (what ``recommend`` selects with) equals a full sort of each row, ties by item index."""

import numpy as np
import pytest

from models.base import top_k


def sorted_top(dense: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    columns = np.tile(np.arange(dense.shape[1]), (dense.shape[0], 1))
    order = np.lexsort((columns, -dense), axis=1)[:, :k]
    scores = np.take_along_axis(dense, order, axis=1)
    order[~np.isfinite(scores)] = -1
    return order, scores


@pytest.mark.parametrize(("items", "k"), [(20_000, 100), (5_000, 150), (300, 50), (40, 60)])
def test_top_k_equals_sorting_whole_rows_with_ties_empty_and_short_rows(items, k):
    rng = np.random.default_rng(items)
    dense = rng.standard_normal((40, items)).astype(np.float32)
    dense[:, rng.random(items) < 0.3] = -np.inf  # excluded items
    dense[0] = -np.inf  # nothing allowed
    dense[1, : items - 5] = -np.inf  # fewer allowed items than k
    dense[2] = np.round(dense[2], 1)  # many ties
    dense[3, rng.choice(items, 10 * k)] = 7.0  # ties at the top, spread over every chunk
    expected_items, expected_scores = sorted_top(dense, min(k, items))
    got_items, got_scores = top_k(dense.copy(), k)
    assert np.array_equal(got_items, expected_items)
    assert np.array_equal(got_scores, expected_scores)
