"""The quality benchmark's tuning (benchmarks/models_quality.py --tune): it tunes on a validation split
cut from the training part only, and reports the tuned model refitted on all of training."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.columns import Columns
from tests.conftest import benchmark_script


@pytest.fixture(scope="module")
def bench():
    return benchmark_script("models_quality")


@pytest.fixture()
def split_dir(bench, tmp_path) -> Path:
    """60 users x 60 items (the benchmark ranks 50), each user with 12 distinct items, split by the stratified rule."""
    rng = np.random.default_rng(0)
    rows = [
        (f"u{u}", f"i{i}", 1.0, float(u * 100 + n)) for u in range(60) for n, i in enumerate(rng.choice(60, 12, False))
    ]
    events = pd.DataFrame(rows, columns=[Columns.User, Columns.Item, Columns.Weight, "ts"])
    events["in_train"] = bench.stratified_train_mask(events, bench.STRATIFIED_TRAIN_SHARE, 42)
    items = pd.DataFrame({Columns.Item: [f"i{i}" for i in range(60)], Columns.Category: "c"})
    events.to_parquet(tmp_path / bench.SPLIT_EVENTS)
    items.to_parquet(tmp_path / bench.SPLIT_ITEMS)
    facts = {"cutoff": 0.0, "max_ts": float(events["ts"].max()), "protocol": "stratified"}
    (tmp_path / bench.SPLIT_FACTS).write_text(json.dumps(facts))
    return tmp_path


def pairs(matrix, users, items) -> set:
    coo = matrix.tocoo()
    return {(users[u], items[i]) for u, i in zip(coo.row, coo.col, strict=True)}


def test_validation_split_holds_no_test_rating(bench, split_dir):
    events = pd.read_parquet(split_dir / "events.parquet")
    held_out = events[~events["in_train"]]
    test = set(zip(held_out[Columns.User], held_out[Columns.Item], strict=True))
    train, relevant, rule = bench.validation_split(split_dir, 0.2, 42)
    seen = pairs(train.matrix, train.user_ids, train.item_ids) | pairs(relevant, train.user_ids, train.item_ids)
    assert relevant.nnz > 0 and "training ratings" in rule
    assert not seen & test
    assert len(seen) == int(events["in_train"].sum())  # every training rating, split again


def test_tuned_row_reports_the_search_and_refits(bench, split_dir):
    row = bench.run_one(split_dir, "ease", 42, tune_trials=3)
    tuning = row["tuning"]
    assert row["model"] == "ease tuned" and tuning["trials"] == 3
    assert tuning["valid_ndcg_at_10_best"] >= tuning["valid_ndcg_at_10_default"]  # defaults are trial 0
    assert row["params"]["regularization"] == tuning["best_params"]["regularization"]
    assert 0.0 <= row["precision_at_10"] <= 1.0 and 0.0 <= row["recall_at_10"] <= 1.0
    table = bench.brief_markdown({"tiny": [row]}).splitlines()
    assert table[2].startswith("| model | NDCG@10 | Precision@10 | Recall@10 | MAP@10 |")
    assert table[4].startswith(f"| ease tuned | {row['ndcg_at_10']:.4f} ± ")
    assert f"({tuning['valid_ndcg_at_10_default']:.4f} -> {tuning['valid_ndcg_at_10_best']:.4f})" in table[4]


def test_a_model_without_search_space_is_refused(bench, split_dir):
    with pytest.raises(SystemExit, match="popularity declares no search space"):
        bench.run_one(split_dir, "popularity", 42, tune_trials=2)


def test_negative_trials_are_refused(bench, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--tune", "-1"])
    assert "--tune must be >= 0 trials, got -1" in capsys.readouterr().err


def test_leave_last_one_holds_out_each_users_latest_rating_and_shuffles_ties(bench):
    events = pd.DataFrame(
        {
            Columns.User: ["a", "a", "a", "b", "b", "b", "c"],
            Columns.Item: ["1", "2", "3", "1", "2", "3", "1"],
            "ts": [10.0, 30.0, 20.0, 5.0, 7.0, 7.0, 1.0],  # b's two latest ratings tie; c has one rating
        }
    )
    users, times = events[Columns.User].to_numpy(), events["ts"].to_numpy()
    held = {seed: events[~bench.leave_last_one_train_mask(users, times, seed)] for seed in range(20)}
    for rows in held.values():
        assert sorted(rows[Columns.User]) == ["a", "b"]  # one per user with a history; c keeps its only rating
        assert rows.loc[rows[Columns.User] == "a", Columns.Item].item() == "2"  # the latest, not the last row
    tie_winners = {rows.loc[rows[Columns.User] == "b", Columns.Item].item() for rows in held.values()}
    assert tie_winners == {"2", "3"}  # a tie at the latest second goes either way by the seed, never to item 1
    assert held[3].equals(events[~bench.leave_last_one_train_mask(users, times, 3)])  # seeded


def test_leave_last_one_validation_is_cut_from_training_by_the_same_rule(bench, split_dir):
    events = pd.read_parquet(split_dir / bench.SPLIT_EVENTS)
    events["in_train"] = bench.per_rating_train_mask("leave_last_one", events, events["ts"], 42)
    events.to_parquet(split_dir / bench.SPLIT_EVENTS)
    facts = json.loads((split_dir / bench.SPLIT_FACTS).read_text()) | {"protocol": "leave_last_one"}
    (split_dir / bench.SPLIT_FACTS).write_text(json.dumps(facts))
    train, relevant, rule = bench.validation_split(split_dir, 0.2, 42)
    assert "latest training rating" in rule
    assert (np.diff(relevant.indptr) == 1).all()  # each of the 60 users: one validation rating
    held_out = events[~events["in_train"]]
    test = set(zip(held_out[Columns.User], held_out[Columns.Item], strict=True))
    seen = pairs(train.matrix, train.user_ids, train.item_ids) | pairs(relevant, train.user_ids, train.item_ids)
    assert not seen & test and len(seen) == 60 * 11
    row = bench.run_one(split_dir, "ease", 42)
    assert row["split"]["protocol"] == "leave_last_one" and row["split"]["test_events"] == 60


def test_reports_of_one_data_set_join_one_table(bench, split_dir, tmp_path, capsys):
    rows = [bench.run_one(split_dir, name, 42) for name in ("ease", "popularity")]
    rows.append(rows[0] | {"model": "ease tuned"})  # a run's tuned rows come after all its default rows
    paths = []
    for n, row in enumerate(rows):  # two runs of the same data set, say cheap and costly models apart
        paths.append(tmp_path / f"run{n}.json")
        paths[-1].write_text(json.dumps({"results": {"tiny": [row]}}))
    assert bench.main(["--brief", "--report", *map(str, paths)]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    models = [line.split(" | ")[0] for line in table[1:]]
    assert models == ["| ease", "| ease tuned", "| popularity"]  # each tuned row under its defaults' row


def flaky_model_factory(bench, failing_calls: set[int]):
    """`make_model` that raises on the given calls (1: tune's look at the defaults, 2: trial 0, 3: trial 1, ...)."""
    real, calls = bench.make_model, []

    def make(name, test_days, n_items, seed, **chosen):
        calls.append(chosen)
        if len(calls) in failing_calls:
            raise FloatingPointError("NaN encountered in factors")
        return real(name, test_days, n_items, seed, **chosen)

    return make


def test_a_failing_trial_is_recorded_and_the_search_goes_on(bench, split_dir, monkeypatch, caplog):
    monkeypatch.setattr(bench, "make_model", flaky_model_factory(bench, {3}))
    with caplog.at_level("WARNING", logger="models_quality"):
        tuning = bench.tune("ease", split_dir, 4, 0.2, 42)
    assert "tune ease: trial 2/4 failed with {'regularization'" in caplog.text
    assert "FloatingPointError: NaN encountered in factors" in caplog.text
    assert tuning["failed_trials"] == 1 and tuning["trials"] == 4
    assert tuning["valid_ndcg_at_10_best"] >= tuning["valid_ndcg_at_10_default"] > 0


def test_defaults_that_fail_on_validation_stop_the_tuning_naming_the_model(bench, split_dir, monkeypatch):
    monkeypatch.setattr(bench, "make_model", flaky_model_factory(bench, {2}))
    with pytest.raises(SystemExit, match="ease: its default parameters failed on the validation split"):
        bench.tune("ease", split_dir, 3, 0.2, 42)
