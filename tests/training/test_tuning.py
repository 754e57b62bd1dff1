"""Hyper-parameter tuning: better than a bad default, within its budgets, never on a test period, in MLflow, reused.

Most tests run on a tiny synthetic log built in memory (four taste groups, 16 days), so they need
no warehouse; the last ones train through the real stages on the shared simulated home.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from models import ALSRecommender, PopularityRecommender
from models.evaluation.splits import EventLog
from models.search import FloatRange
from pipelines.settings import Settings
from pipelines.training.candidates import candidate_factories
from pipelines.training.data import EvaluationData, item_features, make_folds
from pipelines.training.evaluation import evaluation_config
from pipelines.training.tuned_params import read_tuned, store_path, utc_now
from pipelines.training.tuning import (
    TuningUnavailable,
    choose_best,
    earliest_test_start,
    params_for_training,
    tune_and_store,
    tune_model,
    validation_folds,
)
from tests.conftest import copy_home

START = pd.Timestamp("2026-01-01", tz="UTC")
DAY = 86_400


class BadDefaultALS(ALSRecommender):
    """Real ALS with deliberately bad defaults (tiny, over-regularised, barely fitted), inside its search space."""

    name = "als_bad_default"

    def __init__(self, factors=8, regularization=10.0, iterations=5, alpha=1.0, random_state=0):
        super().__init__(factors, regularization, iterations, alpha, random_state)


class KnobPopularity(PopularityRecommender):
    """Popularity with one meaningless knob to search: a model whose trials differ only in cost."""

    def __init__(self, knob: float = 0.5, random_state: int = 0):
        super().__init__(random_state)
        self.knob = knob

    @classmethod
    def search_space(cls):
        return {"knob": FloatRange(0.0, 1.0)}


class SlowPopularity(KnobPopularity):
    """Takes 0.25 s to fit: a trial of known length."""

    name = "slow_popularity"

    def _fit(self, interactions) -> None:
        time.sleep(0.25)
        super()._fit(interactions)


class SpyPopularity(KnobPopularity):
    """Records the newest interaction of every training set it is fitted on."""

    name = "spy_popularity"
    newest_seen: list[float] = []

    def _fit(self, interactions) -> None:
        SpyPopularity.newest_seen.append(float(interactions.require_time().data.max()))
        super()._fit(interactions)


class LongMemoryPopularity(KnobPopularity):
    """Refuses data spanning fewer than 9 days, as the ranker refuses logs too short for its label windows."""

    name = "long_memory_popularity"
    fits = 0

    def refuses(self, interactions):
        ts = interactions.require_time().data
        span = (ts.max() - ts.min()) / DAY
        return f"needs 9 days, the data spans {span:.1f}" if span < 9 else super().refuses(interactions)

    def _fit(self, interactions) -> None:
        LongMemoryPopularity.fits += 1
        super()._fit(interactions)


def synthetic_world(seed=0, users=200, items=80, groups=4, days=16, per_user=24):
    """Users of four taste groups, 85% of their events on their group's items, spread over `days`."""
    rng = np.random.default_rng(seed)
    group_of_item = np.arange(items) % groups
    rows = []
    for user in range(users):
        liked = np.flatnonzero(group_of_item == user % groups)
        picks = np.where(rng.random(per_user) < 0.85, rng.choice(liked, per_user), rng.integers(0, items, per_user))
        when = START + pd.to_timedelta(np.sort(rng.random(per_user)) * days, unit="D")
        rows += [(f"u{user}", f"i{item}", stamp, 1.0) for item, stamp in zip(picks, when, strict=True)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "event_ts", "weight"])
    catalog = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(items)],
            "category": [f"c{i % 7}" for i in range(items)],
            "price": 1.0,
            "created_at": START - pd.Timedelta(days=30),
            "in_stock": True,
            "is_blocked": False,
        }
    )
    return frame, catalog


def world_settings(home, **overrides) -> Settings:
    values = {
        "test_days": 2,
        "backtest_folds": 2,
        "tune_valid_days": 2,
        "tune_valid_folds": 2,
        "tune_trials": 6,
        "tune_timeout_seconds": 120,
        **overrides,
    }
    settings = Settings(home=home, **values)
    settings.ensure_dirs()
    return settings


def world_data(settings: Settings) -> EvaluationData:
    frame, catalog = synthetic_world()
    log = EventLog.from_frame(frame, settings.decay_half_life_days, item_features(catalog))
    folds, label = make_folds(log, settings)
    return EvaluationData(log, catalog, folds, label, "2026-01-17T00:00:00+00:00")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(settings, data, parent run id, stored records) after tuning the bad-default ALS in a parent MLflow run."""
    import mlflow

    from pipelines.training.tracking import configure

    settings = world_settings(
        tmp_path_factory.mktemp("tuning") / "home",
        train_candidates=["als_bad_default"],
        tune_trials=5,
        train_model_params={"als_bad_default": {"iterations": 5}},  # fixed, so not searched: and quick to fit
    )
    configure(settings)
    data = world_data(settings)
    with mlflow.start_run(run_name="tuning") as parent:
        stored = tune_and_store(["als_bad_default"], settings, data, evaluation_config(settings))
    return settings, data, parent.info.run_id, stored


def test_the_tuner_improves_on_a_deliberately_bad_default(world):
    settings, _, _, stored = world
    record = stored["als_bad_default"]
    assert record.default_value is not None  # the defaults ran as trial 0 on the same windows
    assert record.best_value > 1.5 * record.default_value, record
    assert record.params != {"factors": 8, "regularization": 10.0, "alpha": 1.0}


def test_the_trial_budget_is_honoured(world):
    record = world[3]["als_bad_default"]
    assert sum(record.trials.values()) == world[0].tune_trials == 5


def test_the_time_budget_is_honoured(world):
    from mlflow import MlflowClient

    settings, data, _, _ = world
    settings = settings.model_copy(update={"tune_trials": 1000, "tune_timeout_seconds": 1.0})
    folds = validation_folds(data, settings)
    started = time.perf_counter()
    outcome = tune_model("slow_popularity", settings, folds, data.catalog, evaluation_config(settings), timeout=1.0)
    elapsed = time.perf_counter() - started
    n_trials = sum(outcome.trials.values())
    # A trial fits twice (two windows): 0.5 s at least. The clock is read between trials, so the
    # one under way at 1 s finishes: at most 3 trials, well under 1000.
    assert 1 <= n_trials <= 3, outcome.trials
    # No trial starts once the second is spent. Timed from the first trial, which starts with the study:
    # the MLflow run around the study is not the budget's, and on a busy machine it alone took over 1 s.
    client = MlflowClient()
    experiment = client.get_run(outcome.run_id).info.experiment_id
    trials = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{outcome.run_id}'")
    starts = sorted(trial.info.start_time for trial in trials)  # epoch milliseconds
    assert len(starts) == n_trials and starts[-1] - starts[0] < 1000, starts
    assert elapsed < 1.0 + 10.0, elapsed  # and the call ends with them: not 1000 trials of 0.5 s


def test_the_validation_windows_precede_every_backtest_test_period(world):
    settings, data, _, _ = world
    test_start = earliest_test_start(data.folds)
    assert test_start == min(fold.reference_ts for fold in data.folds)
    folds = validation_folds(data, settings)
    assert len(folds) == settings.tune_valid_folds
    log = data.log
    before = log.ts < test_start
    for fold in folds:
        assert fold.reference_ts + settings.tune_valid_days * DAY <= test_start + 1
        # every held-out pair of the window comes from events before the earliest test period
        held = {(log.user_ids[u], log.item_ids[i]) for u, i in zip(log.users[before], log.items[before], strict=True)}
        rows, cols = fold.relevant.nonzero()
        items = fold.train.item_ids
        pairs = {(fold.eval_user_ids[r], items[c]) for r, c in zip(rows, cols, strict=True) if c < len(items)}
        assert pairs and pairs <= held
        assert fold.train.require_time().data.max() < fold.reference_ts


def test_the_tuner_never_fits_on_or_scores_a_test_period(world):
    settings, data, _, _ = world
    SpyPopularity.newest_seen.clear()
    settings = settings.model_copy(update={"tune_trials": 3})
    tune_and_store(["spy_popularity"], settings, data, evaluation_config(settings))
    test_start = earliest_test_start(data.folds)
    assert SpyPopularity.newest_seen, "the spy was never fitted"
    # scored windows end before the test periods, and their training ends where they begin
    assert max(SpyPopularity.newest_seen) < test_start - settings.tune_valid_days * DAY


def test_trials_appear_as_nested_mlflow_runs_under_a_run_per_candidate(world):
    from mlflow import MlflowClient

    settings, _, parent_id, stored = world
    client = MlflowClient()
    experiment = client.get_run(parent_id).info.experiment_id
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent_id}'")
    tuning = [run for run in children if run.info.run_name == "tuning als_bad_default"]
    assert len(tuning) == 1
    candidate = tuning[0]
    assert candidate.info.run_id == stored["als_bad_default"].run_id
    best = stored["als_bad_default"]
    assert {k: float(v) for k, v in candidate.data.params.items() if k.startswith("best.")} == {
        f"best.{k}": float(v) for k, v in best.params.items()
    }
    assert candidate.data.metrics["best_valid.ndcg_at_10"] == pytest.approx(best.best_value)
    trials = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{candidate.info.run_id}'")
    assert len(trials) == settings.tune_trials
    for trial in trials:
        assert set(trial.data.params) == {"factors", "regularization", "alpha"}  # iterations is fixed
        assert trial.data.tags["state"] in {"complete", "pruned"}
        assert "valid.ndcg_at_10" in trial.data.metrics
    history = client.get_metric_history(trials[0].info.run_id, "valid.ndcg_at_10")
    assert {m.step for m in history} <= {0, 1}


def test_progress_is_logged_trial_by_trial_with_the_best_so_far(world, caplog):
    settings, data, _, _ = world
    settings = settings.model_copy(update={"tune_trials": 2})
    with caplog.at_level("INFO", logger="pipelines.training.tuning"):
        tune_and_store(["spy_popularity"], settings, data, evaluation_config(settings))
    lines = [r.getMessage() for r in caplog.records if "trial" in r.getMessage()]
    assert any("trial 1 of 2" in line and "best so far" in line for line in lines), lines
    assert any("trial 2 of 2" in line for line in lines), lines


def test_stored_params_are_reused_until_a_retune_is_due_or_drift_fires(world):
    import mlflow

    update = {"tune_trials": 3, "train_candidates": ["popularity", "popularity_recent"], "train_model_params": {}}
    settings, data = world[0].model_copy(update=update), world[1]
    config, now = evaluation_config(settings), utc_now()
    names = list(settings.train_candidates)
    with mlflow.start_run(run_name="training"):
        params, sources = params_for_training(names, settings, data, config, now=now)
        assert sources == {"popularity": "defaults (no search space)", "popularity_recent": "tuned now"}
        first = read_tuned(settings)["popularity_recent"]
        assert params["popularity_recent"] == first.params

        params, sources = params_for_training(names, settings, data, config, now=now + timedelta(days=6))
        assert sources["popularity_recent"].startswith("reused (tuned at ")
        assert read_tuned(settings)["popularity_recent"] == first  # not tuned again
        model = candidate_factories(settings, params)["popularity_recent"]()
        assert model.window_days == first.params["window_days"]  # the next training fits the tuned values

        _, sources = params_for_training(names, settings, data, config, drift=True, now=now + timedelta(days=6))
        assert sources["popularity_recent"] == "tuned now"
        _, sources = params_for_training(names, settings, data, config, now=now + timedelta(days=14))
        assert sources["popularity_recent"] == "tuned now"
        assert read_tuned(settings)["popularity_recent"].tuned_at == (now + timedelta(days=14)).isoformat()

    off = settings.model_copy(update={"tune_enabled": False})
    params, sources = params_for_training(names, off, data, config, now=now)
    assert params == {} and set(sources.values()) == {"defaults (tuning off)"}


def test_an_explicit_model_parameter_is_never_tuned(tmp_path):
    settings = world_settings(tmp_path / "home", train_model_params={"popularity_recent": {"window_days": 3.0}})
    params, sources = params_for_training(
        ["popularity_recent"], settings, world_data(settings), evaluation_config(settings)
    )
    assert params == {} and sources == {"popularity_recent": "defaults (no search space)"}
    assert (
        candidate_factories(
            settings.model_copy(update={"train_candidates": ["popularity_recent"]}), {"popularity_recent": {}}
        )["popularity_recent"]().window_days
        == 3.0
    )


def test_a_model_that_refuses_a_validation_window_is_not_tuned_and_fits_nothing(world):
    """The ranker at production size: the newer window fits, the older is too short; no trial may find out late."""
    import mlflow

    settings, data, _, _ = world
    folds = validation_folds(data, settings)
    spans = [np.ptp(f.train.require_time().data) / DAY for f in folds]
    assert max(spans) >= 9 > min(spans), spans  # the newer window would fit, the older cannot
    LongMemoryPopularity.fits = 0
    why_not: dict[str, str] = {}
    stored = tune_and_store(["long_memory_popularity"], settings, data, evaluation_config(settings), why_not=why_not)
    assert stored == {}
    assert LongMemoryPopularity.fits == 0
    assert why_not["long_memory_popularity"].startswith("refused: long_memory_popularity refuses the validation data")
    assert "needs 9 days" in why_not["long_memory_popularity"]

    with mlflow.start_run(run_name="training"):
        params, sources = params_for_training(["long_memory_popularity"], settings, data, evaluation_config(settings))
    assert params == {}
    assert sources["long_memory_popularity"].startswith("defaults (tuning refused: ")
    assert LongMemoryPopularity.fits == 0


def test_a_refusing_model_takes_no_share_of_the_time_budget_and_says_it_refused(world, monkeypatch):
    from pipelines.training import tuning

    settings, data, _, _ = world
    settings = settings.model_copy(update={"tune_trials": 1, "tune_timeout_seconds": 100.0})
    budgets, real_tune_model = {}, tuning.tune_model

    def spy(name, settings, folds, catalog, config, timeout, tags=None):
        budgets[name] = timeout
        return real_tune_model(name, settings, folds, catalog, config, timeout, tags)

    monkeypatch.setattr(tuning, "tune_model", spy)
    why_not: dict[str, str] = {}
    stored = tune_and_store(
        ["slow_popularity", "long_memory_popularity"], settings, data, evaluation_config(settings), why_not=why_not
    )
    assert set(budgets) == {"slow_popularity"} and budgets["slow_popularity"] > 90  # all of it, not half
    assert set(stored) == {"slow_popularity"}
    assert set(why_not) == {"long_memory_popularity"} and why_not["long_memory_popularity"].startswith("refused: ")


def test_tuning_refuses_a_split_whose_test_pairs_span_the_whole_log(tmp_path):
    settings = world_settings(tmp_path / "home", eval_split="random_ratio")
    with pytest.raises(TuningUnavailable, match="needs the global_time split"):
        validation_folds(world_data(settings), settings)


def test_tuning_refuses_when_no_validation_window_fits_before_the_test_periods(tmp_path):
    settings = world_settings(tmp_path / "home", backtest_folds=7)  # test periods from day 2 on
    with pytest.raises(TuningUnavailable, match="before the earliest test period cannot hold"):
        validation_folds(world_data(settings), settings)


# --- through the real stages: training reuses what tuning stored, and `recforge tune`


@pytest.fixture(scope="module")
def tuned_training(built, tmp_path_factory):
    """Two trainings on a copy of the simulated home with tuning on: the first tunes, the second reuses."""
    from pipelines.training.train import train_and_register

    settings = copy_home(
        built,
        tmp_path_factory.mktemp("tuned-training") / "home",
        tune_enabled=True,
        tune_trials=3,
        backtest_folds=1,
        train_candidates=["popularity", "popularity_recent"],
    )
    return settings, [train_and_register(settings), train_and_register(settings)]


def test_training_tunes_then_the_next_training_reuses_the_stored_params(tuned_training):
    from mlflow import MlflowClient

    settings, (first, second) = tuned_training
    client = MlflowClient()
    record = read_tuned(settings)["popularity_recent"]
    assert client.get_run(first.run_id).data.tags["params_source.popularity_recent"] == "tuned now"
    reused = client.get_run(second.run_id).data.tags["params_source.popularity_recent"]
    assert reused == f"reused (tuned at {record.tuned_at} on data snapshot {record.data_snapshot})"
    experiment = client.get_run(second.run_id).info.experiment_id
    for result in (first, second):
        runs = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{result.run_id}'")
        backtest = [r for r in runs if r.info.run_name == "popularity_recent"]
        assert float(backtest[0].data.params["window_days"]) == pytest.approx(record.params["window_days"])
    tuning_runs = [r.info.run_name for r in client.search_runs([experiment], "tags.kind = 'tuning'")]
    assert tuning_runs.count("tuning popularity_recent") == 1  # the second training did not tune


def test_recforge_tune_prints_the_best_params_and_where_they_are_stored(tuned_training, tmp_path, monkeypatch, capsys):
    from pipelines.cli import main

    settings = copy_home(tuned_training[0], tmp_path / "home")
    for key, value in {"HOME": settings.home, "TUNE_TRIALS": 2, "BACKTEST_FOLDS": 1}.items():
        monkeypatch.setenv(f"RECFORGE_{key}", str(value))
    assert main(["tune", "--model", "popularity_recent"]) == 0
    out = capsys.readouterr().out
    record = read_tuned(settings)["popularity_recent"]
    assert f"popularity_recent: {record.params}" in out
    assert f"stored in {store_path(settings)}" in out
    assert json.loads(store_path(settings).read_text())["models"]["popularity_recent"]["run_id"] in out


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("unknown", "recforge tune: error: unknown model 'unknown': registered models are ["),
        ("popularity", "recforge tune: error: popularity has nothing to tune: its search space is empty"),
    ],
)
def test_recforge_tune_refuses_a_model_it_cannot_tune_with_one_line(model, message, tmp_path, monkeypatch, capsys):
    from pipelines.cli import main

    monkeypatch.setenv("RECFORGE_HOME", str(tmp_path / "home"))
    assert main(["tune", "--model", model]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith(message), error


def test_the_best_trial_is_one_the_gates_guardrails_would_let_through(world):
    import optuna

    settings, config = world[0], evaluation_config(world[0])
    cold, coverage = config.names.cold_primary, config.names.coverage
    study = optuna.create_study(direction="maximize")
    distributions = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    for x, value, guardrails in [
        (0.5, 0.10, {cold: 0.10, coverage: 0.90}),  # trial 0: the defaults
        (0.9, 0.30, {cold: 0.10, coverage: 0.50}),  # best NDCG, but coverage falls beyond 10%
        (0.7, 0.20, {cold: 0.099, coverage: 0.85}),  # within both tolerances
    ]:
        study.add_trial(
            optuna.trial.create_trial(
                params={"x": x}, distributions=distributions, value=value, user_attrs={"guardrails": guardrails}
            )
        )
    assert choose_best(study, settings, config, has_default=True).number == 2
    assert choose_best(study, settings, config, has_default=False).number == 1
