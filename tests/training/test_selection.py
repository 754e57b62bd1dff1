"""pipelines/training/selection.py: between full model selections, a training backtests only the leaders."""

from datetime import UTC, datetime, timedelta

import pytest

from pipelines.training.selection import (
    Selection,
    candidates_to_backtest,
    read_selection,
    selection_path,
    write_selection,
)
from tests.conftest import copy_home, make_settings

NOW = datetime(2026, 12, 4, 12, tzinfo=UTC)
CANDIDATES = ["popularity", "ease", "itemknn_cosine", "als"]


def record(days_ago=1.0, candidates=CANDIDATES, ranking=("ease", "als", "itemknn_cosine", "popularity")):
    return Selection(
        selected_at=(NOW - timedelta(days=days_ago)).isoformat(),
        candidates=list(candidates),
        ranking=list(ranking),
        metric="ndcg_at_10",
        values={name: 0.3 - 0.01 * i for i, name in enumerate(ranking)},
        data_snapshot="snap",
    )


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path / "home", train_candidates=CANDIDATES, selection_interval_days=7, selection_keep=2)


def test_within_the_interval_only_the_leaders_in_candidate_order_are_backtested(settings):
    write_selection(settings, record())
    chosen = candidates_to_backtest(settings, NOW, drift=False)
    assert chosen.names == ["ease", "als"] and not chosen.full
    assert "ease 0.3000, als 0.2900" in chosen.why and "due 7 day(s) after it" in chosen.why
    assert chosen.folds == settings.backtest_folds and "on every fold" in chosen.why


@pytest.mark.parametrize("selection_folds, expected", [(0, 3), (1, 1), (2, 2), (3, 3), (20, 3)])
def test_between_full_selections_the_leaders_are_scored_on_the_newest_selection_folds(
    settings, selection_folds, expected
):
    write_selection(settings, record())
    narrowed = settings.model_copy(update={"backtest_folds": 3, "selection_folds": selection_folds})
    chosen = candidates_to_backtest(narrowed, NOW, drift=False)
    assert chosen.folds == expected
    assert ("on every fold" if expected == 3 else f"on the newest {expected} of 3 folds") in chosen.why
    full = candidates_to_backtest(narrowed, NOW, drift=True)  # a full selection always scores every fold
    assert full.full and full.folds == 3


@pytest.mark.parametrize(
    "stored, overrides, drift, reason",
    [
        (None, {}, False, "no full selection recorded yet"),
        (record(days_ago=7.5), {}, False, "the last full selection is 7.5 days old (selection_interval_days=7)"),
        (record(), {}, True, "drift was detected"),
        (
            record(candidates=["popularity", "ease"]),
            {},
            False,
            "train_candidates changed since the last full selection",
        ),
        (record(), {"selection_interval_days": 0}, False, "selection_interval_days is 0"),
        (record(ranking=()), {}, False, "ranked no candidate"),
    ],
)
def test_every_reason_for_a_full_selection_backtests_every_candidate(settings, stored, overrides, drift, reason):
    if stored is not None:
        write_selection(settings, stored)
    chosen = candidates_to_backtest(settings.model_copy(update=overrides), NOW, drift=drift)
    assert chosen.names == CANDIDATES and chosen.full
    assert reason in chosen.why


def test_an_unreadable_record_is_an_error_naming_the_file(settings):
    selection_path(settings).parent.mkdir(parents=True, exist_ok=True)
    selection_path(settings).write_text("{not json")
    with pytest.raises(ValueError, match="selection.json is not a model-selection file"):
        read_selection(settings)


@pytest.mark.parametrize(
    "variable, value",
    [("SELECTION_INTERVAL_DAYS", "-1"), ("SELECTION_KEEP", "0"), ("SELECTION_FOLDS", "-1"), ("SELECTION_FOLDS", "21")],
)
def test_selection_settings_are_range_checked_in_one_line(variable, value, monkeypatch):
    from pipelines.settings import InvalidSettings, get_settings

    monkeypatch.setenv(f"RECFORGE_{variable}", value)
    with pytest.raises(InvalidSettings, match=rf"^invalid setting: RECFORGE_{variable}='{value}': must be"):
        get_settings()


@pytest.fixture(scope="module")
def two_trainings(built, tmp_path_factory):
    """A full selection, then a training within the interval that backtests only its leader."""
    from pipelines.training.train import train_and_register

    settings = copy_home(
        built, tmp_path_factory.mktemp("selection") / "home", backtest_folds=2, selection_interval_days=7,
        selection_keep=1, selection_folds=1, train_candidates=["popularity", "popularity_recent", "itemknn_cosine"],
    )  # fmt: skip
    return settings, [train_and_register(settings), train_and_register(settings)]


def test_the_training_after_a_full_selection_backtests_only_its_leader(two_trainings):
    from mlflow import MlflowClient

    settings, (first, second) = two_trainings
    stored = read_selection(settings)
    assert stored.run_id == first.run_id and stored.ranking[0] == first.best_model
    assert set(stored.ranking) == {"popularity", "popularity_recent", "itemknn_cosine"}
    assert set(first.metrics) == set(stored.ranking)
    assert set(second.metrics) == {first.best_model} and second.best_model == first.best_model
    client = MlflowClient()
    assert client.get_run(first.run_id).data.tags["selection"].startswith("full selection: no full selection recorded")
    assert client.get_run(second.run_id).data.tags["selection"].startswith("the leaders of the full selection of")
    # the full selection scored every fold, the training between it on the newest one only, the gate included
    assert client.get_run(first.run_id).data.params["backtest_folds"] == "2"
    assert client.get_run(second.run_id).data.params["backtest_folds"] == "1"
    assert "on the newest 1 of 2 folds" in client.get_run(second.run_id).data.tags["selection"]
    assert read_selection(settings).run_id == first.run_id  # a narrowed training leaves the record alone
