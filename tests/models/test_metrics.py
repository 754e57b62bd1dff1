"""Metrics on lists whose right answers are worked out by hand."""

import numpy as np
import pytest
import scipy.sparse as sp

from models.metrics import (
    CatalogStats,
    MetricNames,
    calc_metrics,
    coverage_at_k,
    diversity_at_k,
    hit_rate_at_k,
    hits_matrix,
    map_at_k,
    mrr_at_k,
    slot_mean,
)


def relevant_of(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    dense = np.zeros((len(rows), n_items), dtype=np.float32)
    for user, items in enumerate(rows):
        dense[user, items] = 1
    return sp.csr_matrix(dense)


def test_calc_metrics_keeps_its_original_keys_and_adds_the_new_ranking_metrics():
    relevant = relevant_of([[0], []], 3)
    metrics = calc_metrics(np.array([[0, -1], [1, 2]]), relevant, ndcg_k=2, recall_k=2)
    assert {"ndcg_at_2", "recall_at_2", "n_eval_users", "map_at_2", "mrr_at_2", "hit_rate_at_2"} == set(metrics)
    assert metrics["ndcg_at_2"] == 1.0 and metrics["recall_at_2"] == 1.0 and metrics["n_eval_users"] == 1


def test_map_averages_precision_at_each_hit_over_min_relevant_and_k():
    # hits at ranks 1 and 3 of 3 relevant items: (1/1 + 2/3) / min(3, 4)
    hits = np.array([[True, False, True, False]])
    np.testing.assert_allclose(map_at_k(hits, np.array([3]), 4), [(1 + 2 / 3) / 3])
    np.testing.assert_allclose(map_at_k(hits, np.array([3]), 2), [1 / 2])


def test_mrr_is_the_reciprocal_rank_of_the_first_hit_within_k():
    hits = np.array([[False, False, True], [False, False, False], [True, True, False]])
    np.testing.assert_allclose(mrr_at_k(hits, 3), [1 / 3, 0, 1])
    np.testing.assert_allclose(mrr_at_k(hits, 2), [0, 0, 1])


def test_hit_rate_is_one_when_any_of_the_top_k_is_relevant():
    hits = np.array([[False, True], [False, False]])
    np.testing.assert_allclose(hit_rate_at_k(hits, 2), [1, 0])
    np.testing.assert_allclose(hit_rate_at_k(hits, 1), [0, 0])


def test_hits_ignore_empty_slots_and_items_beyond_the_models_catalog():
    relevant = relevant_of([[1, 4]], 5)  # item 4 exists only in the held-out data
    assert hits_matrix(np.array([[1, -1, 2]]), relevant).tolist() == [[True, False, False]]


def test_recall_counts_held_out_items_the_model_could_not_know():
    relevant = relevant_of([[0, 3]], 4)  # the model knows items 0-2 only
    metrics = calc_metrics(np.array([[0, 1]]), relevant, ndcg_k=2, recall_k=2)
    assert metrics["recall_at_2"] == 0.5


def test_coverage_counts_distinct_items_of_the_top_k_over_eligible_items():
    recommended = np.array([[0, 1, 5], [1, 2, -1]])
    assert coverage_at_k(recommended, 2, 10) == pytest.approx(3 / 10)
    assert coverage_at_k(recommended, 3, 4) == pytest.approx(4 / 4)


def test_diversity_is_the_share_of_pairs_with_different_categories():
    categories = np.array([0, 0, 1, 2])
    recommended = np.array([[0, 1, 2], [0, 1, -1], [2, 3, -1], [0, -1, -1]])
    values = diversity_at_k(recommended, categories, 3)
    np.testing.assert_allclose(values[:3], [2 / 3, 0.0, 1.0])
    assert np.isnan(values[3])  # one item has no pairs


def test_novelty_is_the_mean_smoothed_self_information_of_the_recommended_items():
    catalog = CatalogStats(categories=np.zeros(3, int), popularity=np.array([7.0, 3.0, 0.0]), n_users=7)
    info = catalog.self_information()
    np.testing.assert_allclose(info, -np.log2(np.array([8, 4, 1]) / 8))
    np.testing.assert_allclose(slot_mean(np.array([[1, 2, -1]]), info, 3), [(1 + 3) / 2])


def test_popularity_bias_is_the_share_of_slots_given_to_the_top_one_percent():
    popularity = np.arange(200, dtype=float)  # items 198 and 199 are the head (1% of 200)
    catalog = CatalogStats(categories=np.zeros(200, int), popularity=popularity, n_users=500)
    assert sorted(np.flatnonzero(catalog.head_items())) == [198, 199]
    relevant = relevant_of([[0]], 200)
    metrics = calc_metrics(np.array([[199, 5, 198, 7]]), relevant, ndcg_k=4, recall_k=4, catalog=catalog)
    assert metrics["popularity_bias_at_4"] == pytest.approx(0.5)


def test_beyond_accuracy_metrics_appear_with_a_catalog_and_coverage_uses_eligible_items():
    catalog = CatalogStats(
        categories=np.array([0, 1, 1, 0]),
        popularity=np.array([3.0, 2.0, 1.0, 0.0]),
        n_users=3,
        eligible=np.array([True, True, False, True]),
        is_new=np.array([False, False, False, True]),
    )
    metrics = calc_metrics(np.array([[0, 1], [1, 3]]), relevant_of([[1], [3]], 4), 2, 2, catalog=catalog)
    assert metrics["coverage_at_2"] == pytest.approx(3 / 3)  # item 2 is not eligible: not in the denominator
    assert metrics["diversity_at_2"] == pytest.approx(1.0)
    assert metrics["new_item_exposure_at_2"] == pytest.approx(0.25)
    assert {"novelty_at_2", "popularity_bias_at_2"} <= set(metrics)


def test_calc_metrics_rejects_lists_shorter_than_the_deepest_cutoff():
    with pytest.raises(ValueError, match="lists hold 2 items but metrics need the top 50"):
        calc_metrics(np.array([[0, 1]]), relevant_of([[0]], 3), ndcg_k=2, recall_k=50)


def test_calc_metrics_rejects_a_row_count_that_does_not_match_the_users():
    with pytest.raises(ValueError, match="one row per user"):
        calc_metrics(np.array([[0, 1]]), relevant_of([[0], [1]], 3), ndcg_k=2, recall_k=2)


def test_catalog_stats_rejects_masks_of_the_wrong_length():
    with pytest.raises(ValueError, match="eligible has 2 entries for 3 items"):
        CatalogStats(np.zeros(3, int), np.zeros(3), 1, eligible=np.ones(2, bool))


def test_metrics_over_six_thousand_users_take_well_under_a_second():
    import time

    rng = np.random.default_rng(0)
    n_users, n_items = 6000, 4000
    recommended = np.stack([rng.choice(n_items, 50, replace=False) for _ in range(n_users)])
    relevant = sp.random(n_users, n_items, density=0.002, format="csr", random_state=1)
    catalog = CatalogStats(rng.integers(0, 20, n_items), rng.integers(0, 500, n_items).astype(float), 6000)
    started = time.perf_counter()
    calc_metrics(recommended, relevant, 10, 50, catalog=catalog)
    assert time.perf_counter() - started < 1.0


def test_metric_names_follow_the_cut_offs_that_calc_metrics_uses():
    names = MetricNames(k=3, recall_k=4)
    relevant = relevant_of([[0]], 5)
    metrics = calc_metrics(np.array([[0, 1, 2, 3]]), relevant, ndcg_k=3, recall_k=4)
    assert {names.primary, names.recall, *names.accuracy} <= set(metrics)
    assert (names.primary, names.cold_primary) == ("ndcg_at_3", "segment.cold.ndcg_at_3")
    assert (names.coverage, names.recall) == ("coverage_at_3", "recall_at_4")
