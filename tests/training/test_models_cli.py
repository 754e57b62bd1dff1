"""`recforge models` and `recforge evaluate` on a real registry and warehouse."""

import pytest

from pipelines.cli import main
from pipelines.training.tracking import CHAMPION, champion_history, configure, version_by_alias
from tests.conftest import copy_home


@pytest.fixture
def registry(retrained, tmp_path, monkeypatch):
    """A private copy of the three-training home (v1 popularity, v2 ALS champion, v3 popularity challenger)."""
    settings = copy_home(retrained[0], tmp_path / "home")
    monkeypatch.setenv("RECFORGE_HOME", str(settings.home))
    for key, value in settings.to_environment().items():
        monkeypatch.setenv(key, value)
    return settings


def champion_of(settings) -> str:
    return str(version_by_alias(configure(settings), settings.registered_model_name, CHAMPION).version)


def test_list_shows_every_version_with_its_aliases_gate_and_metrics(registry, capsys):
    assert main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["version", "aliases", "model", "data", "snapshot"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert list(rows) == ["v3", "v2", "v1"]
    assert rows["v2"][1:3] == ["champion", "als"] and rows["v3"][1:3] == ["challenger", "popularity"]
    assert rows["v3"][4] == "rejected" and float(rows["v2"][5]) > float(rows["v3"][5])


def test_compare_prints_both_versions_metrics_and_the_difference(registry, capsys):
    assert main(["models", "compare", "3", "v2"]) == 0
    out = capsys.readouterr().out
    ndcg = next(line.split() for line in out.splitlines() if line.startswith("ndcg_at_10 "))
    # Three figures printed to 4 decimals, each off by up to 0.5e-4: the printed difference may miss by 1.5e-4.
    assert float(ndcg[2]) - float(ndcg[1]) == pytest.approx(float(ndcg[3]), abs=1.5e-4 + 1e-9)
    assert "segment.cold.ndcg_at_10" in out and "coverage_at_10" in out


def test_promote_refuses_a_version_that_fails_the_gate_and_names_the_checks(registry, capsys):
    assert main(["models", "promote", "3"]) == 1
    err = capsys.readouterr().err
    assert "v3 fails the gate against champion v2: FAIL lift" in err and "--force" in err
    assert champion_of(registry) == "2"


def test_a_forced_promotion_records_what_it_bypassed(registry, capsys):
    assert main(["models", "promote", "3", "--force"]) == 0
    assert "bypassed: lift" in capsys.readouterr().out
    assert champion_of(registry) == "3"
    tags = configure(registry).get_model_version(registry.registered_model_name, "3").tags
    assert tags["promotion.manual"] == "true" and tags["promotion.bypassed"].startswith("lift")
    assert tags["promotion.decision"] == "forced (manual)"


def test_promoting_a_version_that_passes_the_gate_needs_no_force(registry, capsys):
    assert main(["models", "rollback"]) == 0  # champion back to v1 (popularity)
    assert main(["models", "promote", "2"]) == 0
    assert "bypassed: none" in capsys.readouterr().out and champion_of(registry) == "2"


def test_rollback_returns_champion_to_the_previous_one_until_the_first(registry, capsys):
    assert main(["models", "rollback"]) == 0
    assert "rolled back from v2 to v1" in capsys.readouterr().out
    assert champion_of(registry) == "1"
    assert champion_history(configure(registry), registry.registered_model_name) == ["1"]
    assert main(["models", "rollback"]) == 1
    assert "v1 is the first champion on record" in capsys.readouterr().err


def test_an_unknown_version_is_an_error(registry, capsys):
    assert main(["models", "promote", "42"]) == 1
    assert "has no version 42" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["compare", "one", "2"], ["promote", "0"], ["promote", "v-1"]])
def test_a_version_argument_that_is_not_a_number_is_refused(registry, capsys, args):
    with pytest.raises(SystemExit) as exit_info:
        main(["models", *args])
    message = f"not a model version number (1 or more): {args[1]!r}"
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_evaluate_prints_metrics_per_model_and_segment_and_writes_the_report(registry, capsys):
    assert main(["evaluate", "--models", "popularity"]) == 0
    out = capsys.readouterr().out
    groups = [line.split()[1] for line in out.splitlines() if line.startswith("popularity ")]
    assert groups == ["all", "cold", "casual", "power", "new_items"]
    report = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("report: "))
    text = open(report).read()
    assert "long-tail exposure" in text and "By segment and on new items" in text and text.count("<img") == 3


def test_evaluate_runs_other_split_strategies(registry, capsys):
    assert main(["evaluate", "--models", "popularity", "--split", "leave_last_n"]) == 0
    assert "split leave_last_n:n=1; 1 folds" in capsys.readouterr().out


def test_evaluate_refuses_a_model_that_is_not_a_candidate(registry, capsys):
    assert main(["evaluate", "--models", "telepathy"]) == 1
    assert "['telepathy'] are not among train_candidates" in capsys.readouterr().err


def test_a_version_without_recorded_metrics_needs_force_and_then_bypasses_the_whole_gate(registry, capsys):
    import mlflow

    client = configure(registry)
    with mlflow.start_run(run_name="hand-made") as run:
        pass
    source = client.get_model_version(registry.registered_model_name, "2").source
    version = client.create_model_version(registry.registered_model_name, source, run_id=run.info.run_id).version
    assert main(["models", "promote", str(version)]) == 1
    assert "cannot apply the gate" in capsys.readouterr().err and champion_of(registry) == "2"
    assert main(["models", "promote", str(version), "--force"]) == 0
    assert "bypassed: the whole gate (metrics missing)" in capsys.readouterr().out
    assert champion_of(registry) == str(version)


def test_with_an_experiment_win_required_a_version_no_experiment_shipped_is_refused(registry, monkeypatch, capsys):
    assert main(["models", "rollback"]) == 0  # champion back to v1: v2 passes every offline check
    monkeypatch.setenv("RECFORGE_PROMOTION_REQUIRES_EXPERIMENT_WIN", "true")
    assert main(["models", "promote", "2"]) == 1
    err = capsys.readouterr().err
    assert "FAIL experiment_win" in err and "no experiment readout with this version as a variant" in err
    assert champion_of(registry) == "1"


def test_with_an_experiment_win_required_the_version_an_experiment_shipped_is_promoted(registry, monkeypatch, capsys):
    assert main(["models", "rollback"]) == 0
    client = configure(registry)
    for key, value in (("decision", "ship"), ("role", "winner"), ("read_out_at", "2026-12-03T06:30:00+00:00")):
        client.set_model_version_tag(registry.registered_model_name, "2", f"experiment.home-ab.{key}", value)
    monkeypatch.setenv("RECFORGE_PROMOTION_REQUIRES_EXPERIMENT_WIN", "true")
    assert main(["models", "promote", "2"]) == 0
    assert champion_of(registry) == "2"


def test_evaluate_starts_from_the_kept_fold_fit_and_leaves_it_for_the_next_training(registry, capsys):
    kept = registry.models_dir / "fold_fits" / "als" / "fold.json"
    before = kept.read_text()
    assert main(["evaluate", "--models", "als"]) == 0
    assert kept.read_text() == before  # the training's fit, still there for the next training
    client = configure(registry)
    [run] = client.search_runs([client.get_experiment_by_name(registry.mlflow_experiment).experiment_id],
                               "tags.kind = 'evaluation' and tags.model = 'als'")  # fmt: skip
    assert run.data.tags["fold_fit"].startswith("carried on from its fit on fold 'cutoff ")
