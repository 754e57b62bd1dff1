"""The bias audit's metrics on cases whose answer is worked out by hand."""

import numpy as np
import pytest
import scipy.sparse as sp

from models.evaluation.exposure import (
    calibration_kl,
    exposure_gini,
    gap_change,
    gini,
    group_exposure,
    kl_calibration,
    long_tail_share,
    mean_ci,
    segment_means,
)


def test_gini_is_zero_for_equal_exposure_and_three_quarters_when_one_of_four_items_takes_all():
    assert gini(np.array([3, 3, 3, 3])) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0, 5])) == pytest.approx(0.75)  # (n - 1) / n
    # Sorted [1, 2, 3]: (-2*1 + 0*2 + 2*3) / (3 * 6) = 4 / 18.
    assert gini(np.array([3, 1, 2])) == pytest.approx(4 / 18)


def test_gini_refuses_negative_exposure():
    with pytest.raises(ValueError, match="non-negative"):
        gini(np.array([1, -1, 2]))


def test_exposure_gini_counts_eligible_items_never_shown_and_ignores_ineligible_ones():
    lists = np.array([[0, 1], [0, 1]])  # items 0 and 1 twice each, item 2 never, item 3 not eligible
    eligible = np.array([True, True, True, False])
    # Exposure over eligible [2, 2, 0]: sorted [0, 2, 2] -> (-2*0 + 0*2 + 2*2) / (3 * 4) = 1/3.
    assert exposure_gini(lists, 2, eligible) == pytest.approx(1 / 3)
    assert exposure_gini(lists, 2, np.array([True, True, False, False])) == pytest.approx(0.0)


def test_long_tail_share_is_the_tails_share_of_slots_beside_its_share_of_interactions():
    popularity = np.array([50.0, 20.0, 10.0, 10.0, 10.0])  # tail = the 4 least popular (80% of 5)
    lists = np.array([[0, 1], [0, 2], [-1, -1]])  # 4 slots, 2 of them on tail items
    shown, interactions = long_tail_share(lists, popularity, 2)
    assert shown == pytest.approx(0.5)
    assert interactions == pytest.approx(50 / 100)


def test_group_exposure_against_catalog_share():
    groups = np.array([0, 0, 0, 1, -1])  # item 4 has no group: counted nowhere
    lists = np.array([[3, 0], [3, 4]])
    result = group_exposure(lists, groups, 2, np.ones(5, dtype=bool))
    assert result.exposure.tolist() == pytest.approx([1 / 3, 2 / 3])
    assert result.catalog.tolist() == pytest.approx([3 / 4, 1 / 4])
    assert result.ratio.tolist() == pytest.approx([4 / 9, 8 / 3])


def test_steck_kl_is_zero_for_a_calibrated_list_and_finite_when_a_category_is_missing():
    p = np.array([[0.5, 0.5], [1.0, 0.0], [0.5, 0.5]])
    q = np.array([[0.5, 0.5], [1.0, 0.0], [1.0, 0.0]])
    kl = kl_calibration(p, q, alpha=0.01)
    assert kl[:2] == pytest.approx([0.0, 0.0])
    # q~ = 0.99 q + 0.01 p = [0.995, 0.005]: KL = 0.5 ln(0.5/0.995) + 0.5 ln(0.5/0.005).
    assert kl[2] == pytest.approx(0.5 * np.log(0.5 / 0.995) + 0.5 * np.log(0.5 / 0.005))


def test_calibration_kl_per_user_from_history_and_list_nan_without_history():
    categories = np.array([0, 0, 1, 1])
    history = sp.csr_matrix(np.array([[1, 0, 1, 0], [0, 0, 0, 0]], dtype=np.float32))  # user 0: half and half
    lists = np.array([[1, 3], [0, 1]])
    kl = calibration_kl(lists, history, categories, 2)
    assert kl[0] == pytest.approx(0.0)
    assert np.isnan(kl[1])


def test_segment_means_skip_nan():
    values = np.array([1.0, np.nan, 3.0, 4.0])
    labels = np.array(["cold", "cold", "cold", "power"])
    assert segment_means(values, labels, ("cold", "casual", "power")) == pytest.approx(
        {"cold": 2.0, "casual": np.nan, "power": 4.0}, nan_ok=True
    )


def test_mean_ci_is_the_normal_approximation():
    ci = mean_ci(np.array([0.0, 1.0, 0.0, 1.0]), z=1.96)
    half = 1.96 * np.std([0, 1, 0, 1], ddof=1) / 2
    assert (ci.mean, ci.low, ci.high, ci.n) == pytest.approx((0.5, 0.5 - half, 0.5 + half, 4))


def test_gap_change_is_paired_and_finds_a_gap_that_closed():
    labels = np.array(["power"] * 4 + ["cold"] * 4)
    reference = np.array([0.5, 0.6, 0.5, 0.6, 0.1, 0.2, 0.1, 0.2])
    same = gap_change(reference, reference, labels, "power", "cold")
    assert same.change == pytest.approx(0.0) and same.p_value == pytest.approx(1.0)
    # The new model lifts cold users by about 0.3 and leaves power users alone: the gap shrinks by 0.3.
    new = reference + np.array([0, 0, 0, 0, 0.29, 0.31, 0.3, 0.3])
    moved = gap_change(new, reference, labels, "power", "cold")
    assert moved.gap_reference == pytest.approx(0.4) and moved.gap_new == pytest.approx(0.1)
    assert moved.change == pytest.approx(-0.3)
    assert moved.significant() and moved.z < 0


def test_gap_change_needs_two_users_per_segment_and_matching_shapes():
    labels = np.array(["power", "cold", "cold"])
    assert np.isnan(gap_change(np.ones(3), np.ones(3), labels, "power", "cold").z)
    with pytest.raises(ValueError, match="one value per user"):
        gap_change(np.ones(3), np.ones(2), labels, "power", "cold")
