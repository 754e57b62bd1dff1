"""The newest fold's fit kept between trainings (pipelines/training/fold_fits.py): when it is a start, when not."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from models import PopularityRecommender, Recommender
from models.als import ALSRecommender
from models.evaluation import FROM_SCRATCH, EvaluationConfig, EventLog, backtest, global_time_folds, leave_last_n_fold
from models.evaluation.splits import EVENT_TS
from pipelines.training.fold_fits import MODEL, RECORD, FoldFits
from pipelines.training.tracking import configure
from tests.conftest import copy_home
from tests.models.test_contract import catalog, community_walks

DAY = 86_400
TEST_DAYS = 3


def event_log() -> EventLog:
    walks = community_walks().rename(columns={"last_ts": EVENT_TS})
    walks[EVENT_TS] = pd.to_datetime(walks[EVENT_TS], unit="s", utc=True)
    return EventLog.from_frame(walks, 30.0)


def folds(step_days: float):
    """Two global-time folds, newest first, ``step_days`` apart."""
    return global_time_folds(event_log(), 2, TEST_DAYS, step_days, 7)


def als() -> ALSRecommender:
    return ALSRecommender(factors=8, iterations=6)


def store(tmp_path, sweeps: int = 2) -> FoldFits:
    return FoldFits(tmp_path / "fold_fits", sweeps, TEST_DAYS * DAY)


def test_a_fit_kept_a_day_before_starts_the_newer_folds_fit_which_says_so(tmp_path):
    newer, older = folds(1)
    fits = store(tmp_path)
    kept = als().fit(older.train)
    assert fits.keep("als", kept, older, "run-1", "snap", FROM_SCRATCH)
    record = json.loads((fits.directory / "als" / RECORD).read_text())
    assert record["cutoff"] == older.reference_ts and record["run_id"] == "run-1" and record["fold"] == older.name
    on_disk = Recommender.load(fits.directory / "als" / MODEL)
    assert list(on_disk.user_ids) == list(kept.user_ids) and on_disk.seen.nnz == 0  # ids and factors, no history
    np.testing.assert_array_equal(on_disk.user_factors, kept.user_factors)

    start, why = fits.start_for("als", als(), newer)
    assert start is not None and why == "" and start.sweeps == 2
    config = EvaluationConfig(k=5, recall_k=10)
    items = catalog().assign(in_stock=True, is_blocked=False)
    result = backtest(als, [newer, older], items, config, keep_first_model=True, first_fold_start=start)
    assert result.first_fold_fit == f"carried on from its fit on fold '{older.name}' (training run run-1), 2 sweeps"
    assert result.first_fold_model.sweeps_from_start == 2 and list(result.first_fold_model.user_ids) == list(
        newer.train.user_ids
    )
    assert len(result.folds) == 2  # the older fold fitted from scratch as before
    assert backtest(als, [newer], items, config).first_fold_fit == FROM_SCRATCH


def test_a_kept_fit_from_after_the_folds_cutoff_is_never_a_start(tmp_path):
    newer, older = folds(1)
    fits = store(tmp_path)
    fits.keep("als", als().fit(newer.train), newer, "run-1", "snap", FROM_SCRATCH)
    start, why = fits.start_for("als", als(), older)
    assert start is None and "is after this fold's" in why


def test_a_kept_fit_more_than_test_days_before_the_fold_is_not_a_start(tmp_path):
    newer, older = folds(TEST_DAYS + 1)
    fits = store(tmp_path)
    fits.keep("als", als().fit(older.train), older, "run-1", "snap", FROM_SCRATCH)
    start, why = fits.start_for("als", als(), newer)
    assert start is None and f"more than test_days={TEST_DAYS}" in why
    # exactly test_days apart is the final fit's own gap: a start
    newer, older = folds(TEST_DAYS)
    fits.keep("als", als().fit(older.train), older, "run-2", "snap", FROM_SCRATCH)
    assert fits.start_for("als", als(), newer)[0] is not None


def test_a_fit_of_other_parameters_or_of_nothing_kept_is_not_a_start(tmp_path):
    newer, older = folds(1)
    fits = store(tmp_path)
    assert fits.start_for("als", als(), newer) == (None, "no fit kept from an earlier training")
    fits.keep("als", als().fit(older.train), older, "run-1", "snap", FROM_SCRATCH)
    start, why = fits.start_for("als", ALSRecommender(factors=8, iterations=6, alpha=3.0), newer)
    assert start is None and why.startswith("the kept fit has other parameters")
    assert fits.start_for("als_other", als(), newer) == (None, "no fit kept from an earlier training")


def test_a_per_user_split_neither_keeps_a_fit_nor_takes_one(tmp_path):
    newer, older = folds(1)
    per_user = leave_last_n_fold(event_log(), 2, 7)
    fits = store(tmp_path)
    assert not fits.keep("als", als().fit(per_user.train), per_user, "run-1", "snap", FROM_SCRATCH)
    assert not (fits.directory / "als").exists()
    fits.keep("als", als().fit(older.train), older, "run-1", "snap", FROM_SCRATCH)
    start, why = fits.start_for("als", als(), per_user)
    assert start is None and "is not a global-time fold" in why
    assert not fits.keep("popularity", PopularityRecommender().fit(newer.train), newer, "r", "s", FROM_SCRATCH)


def test_an_unreadable_kept_fit_is_a_warning_and_a_fit_from_scratch(tmp_path, caplog):
    newer, older = folds(1)
    fits = store(tmp_path)
    fits.keep("als", als().fit(older.train), older, "run-1", "snap", FROM_SCRATCH)
    npz = fits.directory / "als" / MODEL / "model.npz"
    npz.write_bytes(npz.read_bytes()[:200])  # a disk that filled up half-way through
    start, why = fits.start_for("als", als(), newer)
    assert start is None and why.startswith("the kept fit cannot be read")
    assert str(npz.parent) in caplog.text
    (fits.directory / "als" / RECORD).write_text("{not json")
    start, why = fits.start_for("als", als(), newer)
    assert start is None and why.startswith("the kept fit's record is unreadable")


def test_keeping_replaces_the_kept_fit_whole_and_clears_what_a_killed_training_left(tmp_path):
    newer, older = folds(1)
    fits = store(tmp_path)
    fits.keep("als", als().fit(older.train), older, "run-1", "snap", FROM_SCRATCH)
    leftover = fits.directory / ".writing-als-99999"
    (leftover / MODEL).mkdir(parents=True)
    (fits.directory / ".writing-als_content-1").mkdir()  # another candidate's, not touched
    fits.keep("als", als().fit(newer.train), newer, "run-2", "snap", FROM_SCRATCH)
    assert json.loads((fits.directory / "als" / RECORD).read_text())["run_id"] == "run-2"
    assert sorted(p.name for p in fits.directory.iterdir()) == [".writing-als_content-1", "als"]


@pytest.fixture(scope="module")
def trained_twice(trained, tmp_path_factory):
    """The trained home trained once more on the same data: (settings, first result, second result)."""
    from pipelines.training.train import train_and_register

    settings, first = trained
    settings = copy_home(settings, tmp_path_factory.mktemp("twice") / "home")
    return settings, first, train_and_register(settings)


def als_run(settings, result):
    client = configure(settings)
    return next(
        run
        for run in client.search_runs(
            [client.get_run(result.run_id).info.experiment_id],
            f"tags.mlflow.parentRunId = '{result.run_id}' and tags.model = 'als'",
        )
    )


def test_training_keeps_its_newest_folds_fit_and_the_next_training_carries_on_from_it(trained_twice):
    settings, first, second = trained_twice
    assert als_run(settings, first).data.tags["fold_fit"] == f"{FROM_SCRATCH} (no fit kept from an earlier training)"
    carried = als_run(settings, second).data.tags["fold_fit"]
    sweeps = min(settings.train_fold_warm_sweeps, settings.als_iterations)
    assert carried.startswith("carried on from its fit on fold 'cutoff ")
    assert carried.endswith(f"(training run {als_run(settings, first).info.run_id}), {sweeps} sweeps")
    record = json.loads((settings.models_dir / "fold_fits" / "als" / RECORD).read_text())
    assert record["run_id"] == als_run(settings, second).info.run_id and record["fit"] == carried
    assert mlflow.get_run(second.run_id).data.params["train_fold_warm_sweeps"] == str(settings.train_fold_warm_sweeps)
    # the champion's recipe is the same candidate on the same folds: the gate compares like with like
    assert "champion's recipe = candidate als, same folds" in second.decision_reason


def test_with_zero_sweeps_no_fold_carries_on_and_nothing_is_kept(tmp_path):
    from pipelines.training.evaluation import EvaluationRun, first_fold_start, keep_first_fold_fit
    from tests.conftest import make_settings

    off = make_settings(tmp_path / "off", train_fold_warm_sweeps=0)
    assert FoldFits.from_settings(off) is None
    on = FoldFits.from_settings(make_settings(tmp_path / "on", train_fold_warm_sweeps=4, test_days=2))
    assert on is not None and on.sweeps == 4 and on.max_gap_seconds == 2 * DAY
    newer, older = folds(1)
    run = EvaluationRun(data=type("Data", (), {"folds": [newer]})(), config=None)  # what the two read of it
    assert first_fold_start("als", als, run) == (None, "train_fold_warm_sweeps is 0")
    assert first_fold_start("popularity", PopularityRecommender, run) == (None, "")  # cannot carry on: no reason
    config = EvaluationConfig(k=5, recall_k=10)
    run.results["als"] = backtest(als, [newer], catalog().assign(in_stock=True, is_blocked=False), config,
                                  keep_first_model=True)  # fmt: skip
    configure(off)
    with mlflow.start_run() as active:
        keep_first_fold_fit("als", run, active.info.run_id, "train_fold_warm_sweeps is 0")
    assert mlflow.get_run(active.info.run_id).data.tags["fold_fit"] == f"{FROM_SCRATCH} (train_fold_warm_sweeps is 0)"


def test_a_fit_that_cannot_be_kept_is_a_warning_and_the_training_stands(tmp_path, caplog):
    from pipelines.training.evaluation import EvaluationRun, keep_first_fold_fit
    from tests.conftest import make_settings

    newer, _ = folds(1)
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the kept fits would go")
    run = EvaluationRun(data=type("Data", (), {"folds": [newer], "snapshot": "s"})(), config=None)
    run.fold_fits = FoldFits(blocked / "fold_fits", 2, TEST_DAYS * DAY)
    run.results["als"] = backtest(als, [newer], catalog().assign(in_stock=True, is_blocked=False),
                                  EvaluationConfig(k=5, recall_k=10), keep_first_model=True)  # fmt: skip
    configure(make_settings(tmp_path / "home"))
    with mlflow.start_run():
        keep_first_fold_fit("als", run, "run-1", "no fit kept from an earlier training")
    assert f"als: its fold fit was not kept under {blocked / 'fold_fits'}" in caplog.text


def test_an_evaluation_may_start_from_a_kept_fit_but_never_replaces_it(tmp_path):
    newer, older = folds(1)
    fits = store(tmp_path)
    fits.keep("als", als().fit(older.train), older, "run-1", "snap", FROM_SCRATCH)
    evaluating = FoldFits(fits.directory, fits.sweeps, fits.max_gap_seconds, keeps=False)
    assert evaluating.start_for("als", als(), newer)[0] is not None
    assert not evaluating.keep("als", als().fit(newer.train), newer, "run-2", "snap", FROM_SCRATCH)
    assert json.loads((fits.directory / "als" / RECORD).read_text())["run_id"] == "run-1"
