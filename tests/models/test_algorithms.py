"""Behaviour specific to one algorithm or to the time-aware Interactions (the contract is elsewhere)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from models import (
    CatalogTooLargeError,
    EASERecommender,
    PopularityRecommender,
    RankerRecommender,
    RecentPopularityRecommender,
    Recommender,
    SASRecRecommender,
)
from models import ease as ease_module
from models.columns import Columns
from models.dataset import Interactions
from models.ranker import add_taste_factored_scores, add_user_relative_scores
from models.ranker_features import TASTE_PRIOR, TREND_DAYS, FeatureContext, category_codes, category_taste, segment_of
from tests.models.test_contract import COMMUNITY_SIZE, DAY, T0, catalog, community_data, community_walks

# --- Interactions with time and item attributes


def test_repeated_rows_are_merged_summing_weights_and_keeping_the_latest_time():
    frame = pd.DataFrame(
        {"user_id": ["u", "u"], "item_id": ["i", "i"], "weight": [1.0, 2.0], "last_ts": [T0, T0 + DAY]}
    )
    data = Interactions.from_frame(frame)
    assert data.matrix[0, 0] == 3.0 and data.last_ts[0, 0] == T0 + DAY


def test_timestamps_may_be_datetimes_and_become_epoch_seconds():
    stamps = pd.to_datetime(["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"])
    data = Interactions.from_frame(
        pd.DataFrame({"user_id": ["u", "v"], "item_id": ["i", "i"], "weight": [1.0, 1.0], "last_ts": stamps})
    )
    assert sorted(data.last_ts.data.tolist()) == [T0, T0 + DAY]


def test_a_frame_without_the_key_columns_is_refused_naming_them():
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['weight'\]"):
        Interactions.from_frame(pd.DataFrame({"user_id": ["u"], "item_id": ["i"]}))


def test_split_at_partitions_the_cells_by_their_last_interaction():
    data = community_data()
    cutoff = T0 + 10 * DAY
    before, after = data.split_at(cutoff)
    assert before.matrix.nnz + after.matrix.nnz == data.matrix.nnz
    assert (before.last_ts.data < cutoff).all() and (after.last_ts.data >= cutoff).all()
    assert before.matrix.multiply(after.matrix).nnz == 0
    assert before.user_ids is data.user_ids and after.item_ids is data.item_ids


def test_a_cell_keeps_its_first_time_beside_its_last_and_split_at_keeps_both():
    frame = pd.DataFrame(
        {"user_id": ["u", "u", "v"], "item_id": ["i", "i", "i"], "weight": [1.0, 2.0, 1.0],
         "last_ts": [T0 + 3 * DAY, T0 + DAY, T0 + 2 * DAY]}
    )  # fmt: skip
    data = Interactions.from_frame(frame)
    assert data.first_ts[0, 0] == T0 + DAY and data.last_ts[0, 0] == T0 + 3 * DAY
    before, after = data.split_at(T0 + 2.5 * DAY)
    assert before.first_ts.toarray().tolist() == [[0.0], [T0 + 2 * DAY]]
    assert after.first_ts.toarray().tolist() == [[T0 + DAY], [0.0]]


def test_split_first_met_keeps_a_straddling_cell_in_the_history_as_of_its_first_touch():
    """u met i before the cutoff and again after it: history (u knew i), with no time after the cutoff."""
    frame = pd.DataFrame(
        {"user_id": ["u", "u", "v", "w"], "item_id": ["i", "i", "i", "i"], "weight": [1.0, 2.0, 1.0, 1.0],
         "last_ts": [T0 + 3 * DAY, T0 + DAY, T0 + 2 * DAY, T0 + 4 * DAY]}
    )  # fmt: skip
    data = Interactions.from_frame(frame)
    before, after = data.split_first_met(T0 + 2.5 * DAY)
    assert before.matrix.toarray().ravel().tolist() == [3.0, 1.0, 0.0]
    assert before.last_ts.toarray().ravel().tolist() == [T0 + DAY, T0 + 2 * DAY, 0.0]
    assert before.max_ts < T0 + 2.5 * DAY
    assert after.matrix.toarray().ravel().tolist() == [0.0, 0.0, 1.0]  # only w first met i after the cutoff
    # Without first times only the last is known: split_at's cut, where u's cell is the future's.
    last_only = Interactions.from_frame(frame).split_at(T0 + 2.5 * DAY)
    plain = replace(data, first_ts=None).split_first_met(T0 + 2.5 * DAY)
    for mine, theirs in zip(plain, last_only, strict=True):
        assert (mine.matrix != theirs.matrix).nnz == 0


def test_split_first_met_keeps_the_last_touch_of_a_cell_wholly_before_the_cutoff():
    """Only a straddling cell's time is clipped to its first touch; a cell met twice before keeps its last."""
    frame = pd.DataFrame(
        {"user_id": ["u", "u", "x", "x"], "item_id": ["i", "i", "i", "i"], "weight": [1.0, 1.0, 1.0, 1.0],
         "last_ts": [T0 + 3 * DAY, T0 + DAY, T0, T0 + 2 * DAY]}
    )  # fmt: skip
    before, _ = Interactions.from_frame(frame).split_first_met(T0 + 2.5 * DAY)
    assert before.last_ts.toarray().ravel().tolist() == [T0 + DAY, T0 + 2 * DAY]
    assert before.first_ts.toarray().ravel().tolist() == [T0 + DAY, T0]


def test_time_aware_models_say_they_need_last_ts():
    plain = Interactions.from_frame(community_walks().drop(columns="last_ts"))
    for model in (RecentPopularityRecommender(), SASRecRecommender(epochs=1), RankerRecommender()):
        with pytest.raises(ValueError, match="carry no last_ts"):
            model.fit(plain)


def test_item_features_are_aligned_to_the_item_map_with_gaps_for_unknown_items():
    features = pd.DataFrame(
        {"item_id": ["i01", "i00"], "category": ["b", "a"], "created_at": pd.to_datetime(["2026-01-01"] * 2, utc=True)}
    )
    data = Interactions.from_frame(community_walks(), item_features=features)
    categories = data.item_feature("category")
    assert categories[:2].tolist() == ["a", "b"] and pd.isna(categories[2])
    assert data.item_feature("created_at")[0] == T0
    assert data.item_feature("price") is None


def test_duplicated_item_features_are_refused():
    features = pd.DataFrame({"item_id": ["i00", "i00"], "category": ["a", "b"]})
    with pytest.raises(ValueError, match="1 duplicated item ids"):
        Interactions.from_frame(community_walks(), item_features=features)


# --- persistence


def test_loading_an_unknown_algorithm_names_it(tmp_path):
    model_dir = PopularityRecommender().fit(community_data()).save(tmp_path / "m")
    header = json.loads((model_dir / "model.json").read_text())
    (model_dir / "model.json").write_text(json.dumps({**header, "name": "nope"}))
    with pytest.raises(ValueError, match="no recommender called 'nope'"):
        Recommender.load(model_dir)


def test_a_saved_model_is_a_compressed_npz_that_numpy_reads_back_exactly(tmp_path):
    import zipfile

    from models.base import write_npz

    arrays = {"ids": np.array(["u1", "u22", "u333"]), "rows": np.repeat(np.arange(1000, dtype=np.int32), 50),
              "factors": np.random.default_rng(0).random((100, 8), dtype=np.float32)}  # fmt: skip
    write_npz(tmp_path / "a.npz", **arrays)
    with zipfile.ZipFile(tmp_path / "a.npz") as archive:
        members = {info.filename: info for info in archive.infolist()}
    assert set(members) == {"ids.npy", "rows.npy", "factors.npy"}
    assert all(info.compress_type == zipfile.ZIP_DEFLATED for info in members.values())
    assert members["rows.npy"].compress_size < members["rows.npy"].file_size / 10  # sorted rows shrink
    with np.load(tmp_path / "a.npz", allow_pickle=False) as loaded:
        for name, array in arrays.items():
            np.testing.assert_array_equal(loaded[name], array)
            assert loaded[name].dtype == array.dtype


# --- popularity


def _old_hit_and_new_hit() -> Interactions:
    """Item 'old' was touched by five users a month ago, item 'new' by two users yesterday."""
    rows = [(f"a{u}", "old", 1.0, T0) for u in range(5)] + [(f"b{u}", "new", 1.0, T0 + 30 * DAY) for u in range(2)]
    rows.append(("c", "other", 1.0, T0 + 31 * DAY))
    return Interactions.from_frame(pd.DataFrame(rows, columns=["user_id", "item_id", "weight", "last_ts"]))


def test_recent_popularity_counts_only_the_window_before_the_latest_interaction():
    data = _old_hit_and_new_hit()
    user = data.user_index(["c"])
    recent, _ = RecentPopularityRecommender(window_days=7).fit(data).recommend(user, 2)
    all_time, _ = PopularityRecommender().fit(data).recommend(user, 2)
    assert data.item_ids[recent[0]].tolist() == ["new", "old"]  # 'old' still follows, by all-time count
    assert data.item_ids[all_time[0]].tolist() == ["old", "new"]


def test_recent_popularity_window_must_be_positive():
    with pytest.raises(ValueError, match="window_days must be positive"):
        RecentPopularityRecommender(window_days=0)


# --- EASE


def test_ease_refuses_a_catalog_above_its_limit_naming_size_and_limit():
    with pytest.raises(CatalogTooLargeError, match=r"catalog has 20 items, above max_items=10"):
        EASERecommender(max_items=10).fit(community_data())


def test_ease_never_lets_an_item_predict_itself():
    model = EASERecommender(regularization=1.0).fit(community_data())
    assert np.allclose(np.diag(model.weights), 0.0)


@pytest.mark.parametrize("n", [1, 7, 20, 23])  # under, at and across several symmetrizing blocks of 7
def test_the_cholesky_inverse_equals_the_general_inverse_in_the_matrixs_own_memory(n, monkeypatch):
    monkeypatch.setattr(ease_module, "SYMMETRIZE_BLOCK", 7)
    rng = np.random.default_rng(n)
    factor = rng.random((n, n), dtype=np.float32)
    matrix = factor @ factor.T + np.eye(n, dtype=np.float32)
    expected = np.linalg.inv(matrix.astype(np.float64))
    inverse = ease_module.cholesky_inverse(matrix)
    assert np.shares_memory(inverse, matrix) and inverse.flags.c_contiguous
    assert np.array_equal(inverse, inverse.T)
    assert np.allclose(inverse, expected, rtol=1e-3, atol=1e-5)


def test_the_cholesky_inverse_says_so_when_a_matrix_is_not_positive_definite():
    assert ease_module.cholesky_inverse(np.diag([1.0, -1.0, 2.0]).astype(np.float32)) is None


def test_ease_falls_back_to_the_lu_inverse_with_the_same_weights(monkeypatch):
    cholesky = EASERecommender(regularization=3.0).fit(community_data()).weights
    monkeypatch.setattr(ease_module, "cholesky_inverse", lambda matrix: None)
    assert np.allclose(EASERecommender(regularization=3.0).fit(community_data()).weights, cholesky, atol=1e-5)


# --- ranker


def _small_ranker(**overrides) -> RankerRecommender:
    params = {
        "label_days": 4,
        "label_windows": 2,
        "generators": ["als", "popularity"],
        "generator_params": {"als": {"factors": 4, "iterations": 10, "regularization": 1.0, "alpha": 1.0}},
        "candidates_per_generator": 8,
        "n_estimators": 10,
        "min_child_samples": 5,
    }
    return RankerRecommender(**{**params, **overrides})


def test_ranker_generators_for_training_never_see_their_label_window_or_later():
    data = community_data()
    ranker = _small_ranker().fit(data)
    cells = data.last_ts.toarray()
    for window, generators in enumerate(ranker.window_generators):
        cutoff = data.max_ts - (window + 1) * 4 * DAY
        expected = (cells > 0) & (cells < cutoff)
        for generator in generators:
            np.testing.assert_array_equal(generator.seen.toarray() > 0, expected)


def _with_revisits() -> tuple[Interactions, float, set[tuple[int, int]]]:
    """Community walks where every user comes back, in the last label window, to the first item of their walk."""
    walks = community_walks()
    first = walks.sort_values("last_ts").groupby("user_id").head(1)
    revisits = first.assign(last_ts=walks["last_ts"].max() - DAY)
    data = Interactions.from_frame(pd.concat([walks, revisits]), item_features=catalog(), catalog=catalog())
    cutoff = data.max_ts - 4 * DAY
    first_ts, last_ts = data.first_ts.tocoo(), data.last_ts.tocsr()
    straddling = {
        (int(u), int(i)) for u, i, t in zip(first_ts.row, first_ts.col, first_ts.data, strict=True)
        if t < cutoff <= last_ts[u, i]
    }  # fmt: skip
    return data, cutoff, straddling


def _training_frame(data: Interactions, cutoff: float) -> tuple[pd.DataFrame, list[Recommender]]:
    """The ranker's training rows of the label window starting at `cutoff` and the generators fitted before it."""
    ranker = _small_ranker()
    ranker.item_category, _ = category_codes(data)
    return ranker._training_groups(data, cutoff, 0)


def test_ranker_learns_only_items_first_met_in_the_label_window_and_its_generators_know_the_rest():
    """A revisit in the label window of an item met before it is history (seen, filtered), never a label."""
    data, cutoff, straddling = _with_revisits()
    assert len(straddling) > 20
    frame, generators = _training_frame(data, cutoff)
    assert not straddling & set(zip(frame["user"], frame["item"], strict=True))
    positives = frame[frame["label"] == 1]
    assert (np.asarray(data.first_ts[positives["user"].to_numpy(), positives["item"].to_numpy()]) >= cutoff).all()
    seen = generators[0].seen.tocsr()
    assert all(seen[user, item] > 0 for user, item in straddling)
    # Cut by last touch (no first times), the same revisits are labels: the test can fail.
    old_frame, _ = _training_frame(replace(data, first_ts=None), cutoff)
    learnt = old_frame[old_frame["label"] == 1]
    assert straddling & set(zip(learnt["user"], learnt["item"], strict=True))


def test_ranker_recommends_with_generators_refit_on_all_the_data():
    data = community_data()
    ranker = _small_ranker().fit(data)
    for generator in ranker.serving_generators:
        np.testing.assert_array_equal(generator.seen.toarray() > 0, data.matrix.toarray() > 0)


def test_ranker_features_are_computed_as_of_the_cutoff():
    data = community_data()
    history, _ = data.split_at(data.max_ts - 4 * DAY)
    context = FeatureContext.as_of(history, window_days=4, item_category=None)
    assert context.now == history.max_ts < data.max_ts - 4 * DAY
    np.testing.assert_array_equal(context.item_users, (history.matrix.toarray() > 0).sum(axis=0))


def test_ranker_trend_features_count_only_the_days_before_the_cutoff():
    data = community_data()
    cutoff = data.max_ts - 4 * DAY
    history, _ = data.split_at(cutoff)
    context = FeatureContext.as_of(history, window_days=4, item_category=None)
    cells = history.last_ts.toarray()
    for span, counts in zip(TREND_DAYS, context.item_trend_users, strict=True):
        expected = ((cells > 0) & (cells > history.max_ts - span * DAY)).sum(axis=0)
        np.testing.assert_array_equal(counts, expected)
        # Nothing at or after the cutoff is counted, whatever the full log holds.
        assert counts.sum() <= ((cells > 0) & (cells < cutoff)).sum()
    full = FeatureContext.as_of(data, window_days=4, item_category=None)
    assert not np.array_equal(full.item_trend_users, context.item_trend_users)


def test_ranker_trend_features_are_columns_and_shares_sum_to_one():
    data = community_data()
    context = FeatureContext.as_of(data, window_days=4, item_category=None)
    items = np.arange(data.n_items)
    features = context.pair_features(np.zeros(data.n_items, dtype=np.int64), items)
    assert {f"item_users_{d:g}d" for d in TREND_DAYS} <= set(context.columns) <= set(features)
    last = f"item_share_{TREND_DAYS[-1]:g}d"
    assert features[last].sum() == pytest.approx(1.0)


def test_user_relative_scores_are_on_one_scale_per_user():
    frame = pd.DataFrame(
        {
            "user": [0, 0, 0, 1, 1],
            "item": [0, 1, 2, 0, 1],
            "g0_score": [10.0, 20.0, np.nan, 0.1, 0.1],
        }
    )
    add_user_relative_scores(frame)
    assert frame["g0_score_gap"].tolist()[:2] == [-10.0, 0.0]
    assert np.isnan(frame["g0_score_gap"][2])  # not proposed by the generator: stays missing
    assert frame["g0_score_z"][:2].tolist() == pytest.approx([-0.7071, 0.7071], abs=1e-4)
    assert frame["g0_score_z"][3:].isna().all()  # no spread within the user: no z-score


def _two_sittings() -> Interactions:
    """u1 meets three items of category a in one hour, and item d of category b in each of two other hours."""
    rows = [
        ("u1", "a1", T0), ("u1", "a2", T0 + 60), ("u1", "a3", T0 + 120),
        ("u1", "b1", T0 + 2 * 3600), ("u1", "b2", T0 + 5 * 3600), ("u2", "a1", T0), ("u2", "b1", T0 + 3600),
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=[Columns.User, Columns.Item, Columns.LastTs]).assign(**{Columns.Weight: 1.0})
    items = pd.DataFrame({Columns.Item: ["a1", "a2", "a3", "b1", "b2"], Columns.Category: ["a", "a", "a", "b", "b"]})
    return Interactions.from_frame(frame, item_features=items)


def test_category_taste_counts_visits_not_items():
    """Three items in one sitting are one visit; two sittings are two: the taste reads b over a."""
    data = _two_sittings()
    codes, names = category_codes(data)
    context = FeatureContext.as_of(data, window_days=1, item_category=codes)
    u1 = data.user_index(["u1"])
    visits = dict(zip(names, np.asarray(context.user_category_visits[u1].todense()).ravel(), strict=True))
    assert visits == {"a": 1.0, "b": 2.0}
    taste = dict(zip(names, category_taste(context.user_category_visits, u1)[0], strict=True))
    total = 3 + 2 * TASTE_PRIOR
    assert taste == pytest.approx({"a": (1 + TASTE_PRIOR) / total, "b": (2 + TASTE_PRIOR) / total})


def test_taste_factored_scores_share_the_generators_mass_within_the_category():
    """g<k>_category_share = the candidate's positive score over the user's positive scores of its whole
    category (candidates or not); g<k>_taste_share multiplies it by the user's taste for the category."""
    data = _two_sittings()
    codes, _ = category_codes(data)
    context = FeatureContext.as_of(data, window_days=1, item_category=codes)

    class Fixed:
        def _score(self, users):
            return np.tile(np.array([3.0, -1.0, 1.0, 2.0, 2.0], dtype=np.float32), (len(users), 1))

    users = data.user_index(["u2"])
    a3, b2 = data.item_ids.tolist().index("a3"), data.item_ids.tolist().index("b2")
    frame = pd.DataFrame({"user": [users[0], users[0]], "item": [a3, b2], "g0_score": [1.0, np.nan]})
    add_taste_factored_scores(frame, [Fixed()], context, users)
    a_code = int(codes[a3])
    assert frame["g0_category_share"][0] == pytest.approx(1.0 / (3.0 + 0.0 + 1.0))  # -1 counts as 0
    assert np.isnan(frame["g0_category_share"][1])  # not proposed by the generator: missing
    taste = category_taste(context.user_category_visits, users)[0, a_code]
    assert frame["user_category_taste"][0] == pytest.approx(taste)
    assert frame["g0_taste_share"][0] == pytest.approx(taste / 4.0)


def test_ranker_without_label_users_says_what_to_change():
    with pytest.raises(ValueError, match="starts before the first interaction"):
        _small_ranker(label_days=60, label_windows=1).fit(community_data())


def test_ranker_refuses_an_unknown_generator():
    with pytest.raises(ValueError, match=r"unknown candidate generator\(s\) \['nope'\]"):
        RankerRecommender(generators=["als", "nope"])


def test_ranker_reports_the_importance_of_every_feature():
    ranker = _small_ranker().fit(community_data())
    importance = ranker.feature_importance()
    assert set(importance) == set(ranker.feature_names)
    assert {
        "g0_rank",
        "g1_score",
        "g1_score_gap",
        "g0_score_z",
        "item_users_1d",
        "user_category_share",
        "price_vs_user_mean",
    } <= set(importance)


def test_user_segments_follow_the_marts_thresholds():
    assert segment_of(np.array([0, 4, 5, 50, 51])).tolist() == [0, 0, 1, 1, 2]


# --- SASRec


def test_sasrec_with_sampled_negatives_also_learns_the_walk():
    data = community_data()
    model = SASRecRecommender(
        max_len=8, embedding_dim=16, n_blocks=1, n_heads=1, dropout=0.0, epochs=60, learning_rate=0.01, n_negatives=5
    ).fit(data)
    items, _ = model.recommend(np.arange(data.n_users), 1)
    last = data.last_ts.toarray().argmax(axis=1)
    numbers = np.array([int(data.item_ids[i][1:]) for i in last])
    successor = numbers // COMMUNITY_SIZE * COMMUNITY_SIZE + (numbers % COMMUNITY_SIZE + 1) % COMMUNITY_SIZE
    assert (np.array([int(data.item_ids[i][1:]) for i in items[:, 0]]) == successor).mean() > 0.9


def test_sasrec_samples_negatives_by_how_often_items_are_targets():
    """Column 0 of a window is only ever an input and 0 is padding: neither counts; every item gets one more."""
    import torch

    from models.sasrec import target_frequencies

    windows = torch.tensor([[0, 3, 1, 1], [2, 1, 1, 3]])  # targets: 3 1 1 / 1 1 3 (item 2 only as an input)
    probability, log_probability = target_frequencies(windows, n_items=4)
    assert torch.allclose(probability, torch.tensor([5.0, 1.0, 3.0, 1.0]) / 10)
    assert torch.allclose(log_probability, torch.log(probability))


def test_sampled_softmax_logits_are_corrected_by_the_log_sampling_probability_and_mask_the_target():
    import torch

    from models.sasrec import sampled_softmax_logits

    torch.manual_seed(0)
    hidden, catalog = torch.randn(3, 4), torch.randn(6, 4)  # row 0 of the catalog is padding
    targets, negatives = torch.tensor([1, 2, 5]), torch.tensor([2, 4, 4])
    log_q = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.25, 0.15]))
    logits = sampled_softmax_logits(hidden, catalog, targets, negatives, log_q)
    raw_positive = (hidden * catalog[targets]).sum(-1)
    assert torch.allclose(logits[:, 0], raw_positive - log_q[targets - 1])
    raw_negative = hidden @ catalog[negatives].T
    assert torch.allclose(logits[0, 1:], raw_negative[0] - log_q[negatives - 1])
    assert torch.isneginf(logits[1, 1]) and not torch.isinf(logits[1, 2:]).any()  # user 1's target 2 drawn once
    uniform = sampled_softmax_logits(hidden, catalog, targets, negatives, torch.full((5,), -1.0))
    assert torch.allclose(uniform[:, 0], raw_positive + 1.0)  # a uniform draw shifts every logit alike


def test_sasrec_refuses_heads_that_do_not_divide_the_width():
    with pytest.raises(ValueError, match="divisible by n_heads"):
        SASRecRecommender(embedding_dim=10, n_heads=3)


def test_sasrec_uses_the_full_softmax_on_small_catalogs_and_sampled_negatives_above(monkeypatch):
    from models import sasrec

    model = SASRecRecommender()
    assert model.negatives_for(sasrec.FULL_SOFTMAX_MAX_ITEMS) == 0
    assert model.negatives_for(sasrec.FULL_SOFTMAX_MAX_ITEMS + 1) == sasrec.AUTO_NEGATIVES
    assert SASRecRecommender(n_negatives=0).negatives_for(10**6) == 0
    assert SASRecRecommender(n_negatives=7).negatives_for(20) == 7


@pytest.mark.parametrize("bad", [{"n_negatives": -1}, {"n_negatives": "many"}, {"max_windows": 0}])
def test_sasrec_refuses_bad_sampling_parameters_naming_them(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        SASRecRecommender(**bad)


def test_an_sasrec_epoch_trains_on_at_most_max_windows_windows_a_fresh_sample_each_epoch(monkeypatch):
    import torch

    data = community_data()
    seen_batches: list[int] = []
    original = torch.Tensor.split

    def counting_split(tensor, size, *args, **kwargs):
        if tensor.dim() == 2 and tensor.dtype == torch.int64:  # the epoch's windows, about to be batched
            seen_batches.append(tensor.shape[0])
            firsts.append(tensor[:, -1].tolist())
        return original(tensor, size, *args, **kwargs)

    firsts: list[list[int]] = []
    monkeypatch.setattr(torch.Tensor, "split", counting_split)
    params = {"max_len": 4, "embedding_dim": 8, "n_heads": 1, "epochs": 3, "early_stopping": False}
    SASRecRecommender(**params, max_windows=10).fit(data)
    assert seen_batches == [10, 10, 10] and firsts[0] != firsts[1]
    seen_batches.clear()
    SASRecRecommender(**params).fit(data)
    assert len(set(seen_batches)) == 1 and seen_batches[0] > 10  # every window, below the default cap
