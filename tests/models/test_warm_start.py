"""ALS carrying on from an earlier fit (``fit_from``): training's final fit starts from the newest fold's factors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models import PopularityRecommender
from models.als import ALSRecommender, carried_over
from models.dataset import Interactions
from models.evaluation import backtest
from models.evaluation.evaluate import EvaluationConfig
from tests.models.test_contract import DAY, T0, catalog, community_walks


def interactions_until(cutoff: float | None = None) -> Interactions:
    """The community walks up to `cutoff` (all of them without): fewer users and items the earlier it is."""
    walks = community_walks()
    if cutoff is not None:
        walks = walks[walks["last_ts"] < cutoff]
    return Interactions.from_frame(walks, item_features=catalog(), catalog=catalog())


def test_carried_over_puts_each_known_row_at_its_ids_place_and_starts_the_others_small():
    known = np.arange(6, dtype=np.float32).reshape(3, 2)
    rows = carried_over(np.array(["a", "b", "c"], dtype=object), known, np.array(["c", "x", "a"], dtype=object),
                        np.random.default_rng(0))  # fmt: skip
    assert rows.dtype == np.float32 and rows.flags.c_contiguous and rows.flags.writeable
    assert rows[0].tolist() == [4.0, 5.0] and rows[2].tolist() == [0.0, 1.0]
    assert ((rows[1] >= 0) & (rows[1] < 0.01)).all()


def test_one_sweep_from_a_converged_fit_keeps_its_loss_where_one_iteration_from_scratch_is_far_off():
    data = interactions_until()
    converged = ALSRecommender(factors=8, iterations=15).fit(data)
    carried = ALSRecommender(factors=8, iterations=15).fit_from(data, converged, 1)
    scratch = ALSRecommender(factors=8, iterations=1).fit(data)
    assert carried.sweeps_from_start == 1 and converged.sweeps_from_start is None
    assert carried.loss(data) <= converged.loss(data) * 1.01
    assert scratch.loss(data) > converged.loss(data) * 1.5


def test_a_few_sweeps_from_an_older_fit_reach_the_loss_of_a_fit_from_scratch_on_the_newer_data():
    older, newer = interactions_until(T0 + 12 * DAY), interactions_until()
    assert older.n_users < newer.n_users or older.n_items < newer.n_items or older.matrix.nnz < newer.matrix.nnz
    start = ALSRecommender(factors=8, iterations=20).fit(older)
    carried = ALSRecommender(factors=8, iterations=20).fit_from(newer, start, 5)
    scratch = ALSRecommender(factors=8, iterations=20).fit(newer)
    assert carried.sweeps_from_start == 5
    assert carried.loss(newer) <= scratch.loss(newer) * 1.02


def test_users_and_items_the_start_never_saw_get_factors_and_lists():
    cutoff = T0 + 5 * DAY
    older, newer = interactions_until(cutoff), interactions_until()
    start = ALSRecommender(factors=8, iterations=5).fit(older)
    model = ALSRecommender(factors=8, iterations=5).fit_from(newer, start, 2)
    assert list(model.user_ids) == list(newer.user_ids) and model.user_factors.shape == (newer.n_users, 8)
    assert model.item_factors.shape == (newer.n_items, 8) and np.isfinite(model.user_factors).all()
    new_users = np.flatnonzero(~pd.Index(newer.user_ids).isin(older.user_ids))
    assert len(new_users) > 0
    items, _ = model.recommend(new_users, 3)
    assert (items >= 0).all()


@pytest.mark.parametrize(("start_factors", "sweeps"), [(4, 3), (8, 0)], ids=["a start of another size", "zero sweeps"])
def test_an_unusable_start_or_zero_sweeps_fit_from_scratch(start_factors, sweeps):
    data = interactions_until()
    start = ALSRecommender(factors=start_factors, iterations=3).fit(data)
    model = ALSRecommender(factors=8, iterations=3).fit_from(data, start, sweeps)
    plain = ALSRecommender(factors=8, iterations=3).fit(data)
    assert model.sweeps_from_start is None
    np.testing.assert_array_equal(model.user_factors, plain.user_factors)


def test_another_algorithm_as_start_and_an_unfitted_start_fit_from_scratch():
    data = interactions_until()
    for start in (PopularityRecommender().fit(data), ALSRecommender(factors=8)):
        assert ALSRecommender(factors=8, iterations=2).fit_from(data, start, 2).sweeps_from_start is None


def test_the_sweeps_are_at_most_the_recipes_iterations():
    data = interactions_until()
    start = ALSRecommender(factors=8, iterations=3).fit(data)
    assert ALSRecommender(factors=8, iterations=3).fit_from(data, start, 100).sweeps_from_start == 3


def test_a_model_that_cannot_carry_on_fits_from_scratch_through_the_base_class():
    data = interactions_until()
    start = PopularityRecommender().fit(data)
    model = PopularityRecommender().fit_from(data, start, 5)
    assert model.is_fitted and not PopularityRecommender.warm_starts and ALSRecommender.warm_starts


def test_loss_refuses_interactions_of_other_users():
    older, newer = interactions_until(T0 + 5 * DAY), interactions_until()
    with pytest.raises(ValueError, match="not this model's"):
        ALSRecommender(factors=8, iterations=2).fit(older).loss(newer)


def test_the_backtest_keeps_the_first_folds_model_only_when_asked_and_only_where_it_can_carry_on():
    from models.evaluation import EventLog, global_time_folds
    from models.evaluation.splits import EVENT_TS

    walks = community_walks().rename(columns={"last_ts": EVENT_TS})
    walks[EVENT_TS] = pd.to_datetime(walks[EVENT_TS], unit="s", utc=True)
    folds = global_time_folds(EventLog.from_frame(walks, 30.0), 2, 3, 3, 7)
    config = EvaluationConfig(k=5, recall_k=10)
    items = catalog().assign(in_stock=True, is_blocked=False)
    kept = backtest(lambda: ALSRecommender(factors=8, iterations=2), folds, items, config, keep_first_model=True)
    assert isinstance(kept.first_fold_model, ALSRecommender)
    assert list(kept.first_fold_model.user_ids) == list(folds[0].train.user_ids)
    assert backtest(lambda: ALSRecommender(factors=8, iterations=2), folds, items, config).first_fold_model is None
    popular = backtest(PopularityRecommender, folds, items, config, keep_first_model=True)
    assert popular.first_fold_model is None
