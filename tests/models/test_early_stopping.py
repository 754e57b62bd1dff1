"""Early stopping: BPR and SASRec choose their epochs on a validation window cut from their own training data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models import BPRRecommender, SASRecRecommender
from models.dataset import Interactions
from models.early_stopping import MIN_VALIDATION_USERS, EpochSearch, validation_window
from models.evaluation import EventLog, global_time_folds

DAY = 86_400
START = pd.Timestamp("2026-01-01", tz="UTC")
TEST_DAYS = 5


def clustered_events(seed: int = 0, users: int = 240, items: int = 60, days: int = 30) -> pd.DataFrame:
    """Users in four taste clusters, each touching items of its cluster (and some noise) over ``days`` days."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(users):
        cluster = user % 4
        for _ in range(12):
            item = (
                rng.integers(0, items) if rng.random() < 0.2 else cluster * (items // 4) + rng.integers(0, items // 4)
            )
            rows.append(
                (f"u{user:03d}", f"i{item:02d}", START + pd.Timedelta(seconds=int(rng.integers(0, days * DAY))))
            )
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_ts"]).assign(weight=1.0)


def newest_fold(events: pd.DataFrame):
    log = EventLog.from_frame(events, half_life_days=1000.0)
    return global_time_folds(log, 1, TEST_DAYS, TEST_DAYS, 7.0)[0]


def with_scrambled_test_period(events: pd.DataFrame) -> pd.DataFrame:
    """The same log before the newest fold's cutoff; a different one (shuffled items) in its test period."""
    cutoff = events["event_ts"].max() - pd.Timedelta(days=TEST_DAYS)
    late = events["event_ts"] >= cutoff
    other = events.copy()
    other.loc[late, "item_id"] = np.random.default_rng(7).permutation(other.loc[late, "item_id"].to_numpy())
    return other


def test_the_validation_window_is_the_latest_share_of_the_given_interactions():
    fold = newest_fold(clustered_events())
    window = validation_window(fold.train, 0.1, random_state=0)
    times = fold.train.last_ts.data
    assert window.cutoff_ts == pytest.approx(np.quantile(times, 0.9))
    assert window.cutoff_ts < fold.reference_ts  # before the fold's test period
    assert window.history.last_ts.data.max() < window.cutoff_ts
    assert len(window.users) >= MIN_VALIDATION_USERS


def test_without_times_the_validation_window_is_a_seeded_random_share():
    frame = clustered_events().rename(columns={"event_ts": "ignored"})
    data = Interactions.from_frame(frame)
    first, again = validation_window(data, 0.1, 3), validation_window(data, 0.1, 3)
    assert first.cutoff_ts is None
    assert (first.relevant != again.relevant).nnz == 0
    assert first.relevant.nnz == pytest.approx(0.1 * data.matrix.nnz, rel=0.2)


def test_above_its_cap_the_window_scores_a_seeded_sample_of_its_users_from_the_same_history():
    fold = newest_fold(clustered_events())
    whole = validation_window(fold.train, 0.1, random_state=0)
    cap = len(whole.users) // 2
    sampled, again = (validation_window(fold.train, 0.1, random_state=0, max_users=cap) for _ in range(2))
    assert len(sampled.users) == cap and np.array_equal(sampled.users, again.users)
    assert set(sampled.users) < set(whole.users) and np.all(np.diff(sampled.users) > 0)
    assert (sampled.history.matrix != whole.history.matrix).nnz == 0 and sampled.cutoff_ts == whole.cutoff_ts


def test_too_few_validation_users_means_no_window():
    tiny = Interactions.from_frame(clustered_events(users=8).assign(last_ts=lambda f: f["event_ts"]))
    assert validation_window(tiny, 0.1, 0) is None


def test_bpr_stops_early_on_the_validation_window_not_on_the_test_period():
    events = clustered_events()
    fits = []
    for log in (events, with_scrambled_test_period(events)):
        fold = newest_fold(log)
        model = BPRRecommender(factors=8, learning_rate=0.05, iterations=400, eval_every=10, patience=2)
        fits.append((fold, model.fit(fold.train)))
    (fold, model), (_, other) = fits
    assert model.validation_cutoff_ts < fold.reference_ts
    assert model.epoch_search.curve[-1][0] < 400  # stopped before the most epochs
    assert model.epoch_search.best_epochs < model.epoch_search.curve[-1][0]
    # A different test period changes nothing: the epochs were chosen on data before it.
    assert other.epoch_search.curve == model.epoch_search.curve
    assert np.array_equal(other.item_factors, model.item_factors)


def test_bpr_without_early_stopping_runs_every_iteration():
    fold = newest_fold(clustered_events())
    model = BPRRecommender(factors=8, iterations=30, early_stopping=False).fit(fold.train)
    assert model.epoch_search is None


def test_adam_bpr_continues_where_it_stopped_as_early_stopping_needs():
    """Early stopping fits `eval_every` epochs at a time: two fits of 5 epochs must be one fit of 10."""
    from models.bpr_adam import AdamBPR

    matrix = newest_fold(clustered_events()).train.matrix

    def trainer(epochs):
        return AdamBPR(8, 0.01, 1e-3, epochs, negatives=4, random_state=3, num_threads=1)

    stepped, whole = trainer(5), trainer(10).fit(matrix)
    stepped.fit(matrix).fit(matrix)
    assert np.array_equal(stepped.item_factors, whole.item_factors)
    assert np.array_equal(stepped.user_factors[:, -1], np.ones(matrix.shape[0], dtype=np.float32))  # the bias slot


def test_adam_bpr_is_early_stopped_and_repeats_for_a_seed():
    fold = newest_fold(clustered_events())
    fits = [BPRRecommender(optimizer="adam", factors=8, learning_rate=0.01, iterations=200, eval_every=5, patience=2,
                           random_state=4).fit(fold.train) for _ in range(2)]  # fmt: skip
    assert fits[0].epoch_search.curve[-1][0] < 200
    assert np.array_equal(fits[0].item_factors, fits[1].item_factors)
    assert fits[0].params()["optimizer"] == "adam" and fits[0].params()["regularization"] == 1e-3


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ({"optimizer": "lbfgs"}, "optimizer must be one of"),
        ({"negatives": 0}, "negatives"),
        ({"num_threads": 0}, "num_threads"),
    ],
)
def test_bpr_refuses_an_unknown_optimizer_or_sampling_naming_it(bad, named):
    with pytest.raises(ValueError, match=named):
        BPRRecommender(**bad)


def test_sasrec_keeps_the_weights_of_its_best_validation_epoch():
    fold = newest_fold(clustered_events())
    model = SASRecRecommender(max_len=12, embedding_dim=16, n_heads=1, epochs=40, patience=2, learning_rate=0.01)
    model.fit(fold.train)
    search = model.epoch_search
    assert model.validation_cutoff_ts < fold.reference_ts
    assert search.curve[-1][0] < 40 and search.curve[-1][0] - search.best_epochs == 2


def test_the_epoch_search_stops_after_patience_evaluations_without_a_gain():
    search = EpochSearch(every=10, patience=2, max_epochs=100)
    assert [search.record(e, s) for e, s in [(10, 0.1), (20, 0.3), (30, 0.2), (40, 0.25)]] == [False] * 3 + [True]
    assert search.best_epochs == 20


def test_a_dip_after_the_first_evaluation_does_not_stop_the_warm_up():
    """SASRec's curve at a small step on ml-latest-small: under its first epoch's score for a while, then far above."""
    search = EpochSearch(every=1, patience=3, max_epochs=56)
    assert search.warm_up_epochs == 14
    dip = [(1, 0.0168), (2, 0.0117), (3, 0.0076), (4, 0.0083), (5, 0.0129)]
    assert [search.record(e, s) for e, s in dip] == [False] * 5  # patience from epoch 1 would stop at 4
    assert not search.record(10, 0.0369) and search.best_epochs == 10
    assert [search.record(e, 0.03) for e in (11, 12, 13)] == [False, False, True]  # past the first: patience as ever


def test_a_first_evaluation_that_stays_best_stops_at_the_end_of_the_warm_up():
    search = EpochSearch(every=2, patience=2, max_epochs=40)
    stops = [search.record(e, 0.2 if e == 2 else 0.1) for e in range(2, 41, 2)]
    assert stops.index(True) == 4  # epoch 10 = a quarter of 40: the warm-up is over, the first epoch kept
    assert search.best_epochs == 2
