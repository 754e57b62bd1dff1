"""Training: backtested candidates in MLflow, a registered pyfunc, and the promotion gate on real trainings."""

import json
import logging
from functools import partial

import mlflow
import pandas as pd
import pytest

from models import Recommender
from pipelines.training.gate import decide
from pipelines.training.tracking import (
    CHALLENGER,
    CHAMPION,
    CLASSIC_ML_KIND,
    EXPERIMENT_KIND_TAG,
    champion_history,
    configure,
    version_by_alias,
)
from pipelines.training.train import apply_decision, train_and_register
from tests.conftest import copy_home


def child_runs(client, parent_run_id: str):
    experiment = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")


def test_als_beats_popularity_on_the_backtest(trained):
    _, result = trained
    primary = result.primary_metric
    assert result.metrics["als"][primary] > 1.2 * result.metrics["popularity"][primary]
    assert result.best_model == "als"


def test_training_logs_a_parent_run_with_a_nested_run_per_candidate(trained):
    settings, result = trained
    client = configure(settings)
    parent = client.get_run(result.run_id)
    assert parent.data.tags["data_snapshot"] and parent.data.tags["code_version"]
    assert parent.data.tags["split"].startswith("global_time:test_days=3,folds=3")
    assert parent.data.tags["promotion.decision"] == "promoted"
    children = child_runs(client, result.run_id)
    assert sorted(run.data.tags["model"] for run in children) == ["als", "popularity"]
    for run in children:
        for metric in (
            "ndcg_at_10",
            "ndcg_at_10_std",
            "ndcg_at_10_se",
            "segment.cold.ndcg_at_10",
            "new_items.recall_at_50",
        ):
            assert metric in run.data.metrics
        assert run.data.params["random_state"] == str(settings.train_random_state)


def test_each_candidate_logs_its_per_fold_values_as_steps(trained):
    settings, result = trained
    client = configure(settings)
    als = next(run for run in child_runs(client, result.run_id) if run.data.tags["model"] == "als")
    history = client.get_metric_history(als.info.run_id, "fold.ndcg_at_10")
    assert sorted(m.step for m in history) == [0, 1, 2]
    assert pytest.approx(sum(m.value for m in history) / 3) == als.data.metrics["ndcg_at_10"]


def test_the_report_and_the_gate_record_are_logged_on_the_training_run(trained):
    settings, result = trained
    client = configure(settings)
    names = {a.path for a in client.list_artifacts(result.run_id, "reports")}
    assert names == {f"reports/{result.report.name}", "reports/audit"}  # the bias audit beside the report
    record = mlflow.artifacts.load_dict(f"runs:/{result.run_id}/gate.json")
    assert record["promoted"] is True and record["model"] == "als"
    assert (settings.reports_dir / "evaluation" / "latest.html").read_text() == result.report.read_text()


def test_the_report_shows_each_accuracy_metrics_standard_error_over_users(trained):
    _, result = trained
    text = result.report.read_text()
    ndcg = result.metrics["als"]["ndcg_at_10"]
    error = result.metrics["als"]["ndcg_at_10_se"]
    assert 0 < error < ndcg and f"{ndcg:.4f} ± " in text and f"(SE {error:.4f})" in text


def test_the_first_model_becomes_champion(trained):
    settings, result = trained
    champion = version_by_alias(configure(settings), settings.registered_model_name, CHAMPION)
    assert champion is not None and str(champion.version) == result.model_version


def test_the_registered_version_records_its_recipe(trained):
    settings, result = trained
    version = configure(settings).get_model_version(settings.registered_model_name, result.model_version)
    assert version.tags["model"] == "als"
    assert json.loads(version.tags["model_params"])["factors"] == settings.als_factors


def test_the_final_fit_carries_on_from_the_newest_folds_als_and_says_so_on_the_run_and_version(trained):
    settings, result = trained
    client = configure(settings)
    version = client.get_model_version(settings.registered_model_name, result.model_version)
    assert version.tags["final_fit"].startswith("from its fit on fold 'cutoff ")
    assert version.tags["final_fit"].endswith(f"', {settings.train_final_warm_sweeps} sweeps")
    assert client.get_run(version.run_id).data.tags["final_fit"] == version.tags["final_fit"]
    assert client.get_run(result.run_id).data.params["train_final_warm_sweeps"] == str(settings.train_final_warm_sweeps)


def test_fit_final_fits_from_scratch_with_zero_sweeps_or_without_a_kept_fold_model(built):
    from models.als import ALSRecommender
    from models.evaluation.backtest import BacktestResult
    from pipelines.training.data import load_evaluation_data
    from pipelines.training.train import FROM_SCRATCH, fit_final

    data = load_evaluation_data(built)
    factory = partial(ALSRecommender, factors=8, iterations=3)
    start = factory().fit(data.folds[0].train)
    kept = BacktestResult("als", {}, first_fold_model=start)
    model, how = fit_final(factory, kept, data, 2)
    assert how == f"from its fit on fold '{data.folds[0].name}', 2 sweeps" and model.sweeps_from_start == 2
    assert list(model.user_ids) == list(data.full_interactions().user_ids)
    for result, sweeps in ((kept, 0), (BacktestResult("als", {}), 2)):
        model, how = fit_final(factory, result, data, sweeps)
        assert how == FROM_SCRATCH and model.is_fitted and model.sweeps_from_start is None
    declined = BacktestResult(
        "als", {}, first_fold_model=ALSRecommender(factors=4, iterations=2).fit(data.folds[0].train)
    )
    assert fit_final(factory, declined, data, 2)[1] == FROM_SCRATCH


def test_the_registered_model_loads_and_recommends_on_its_own(trained):
    settings, _ = trained
    configure(settings)
    model = mlflow.pyfunc.load_model(f"models:/{settings.registered_model_name}@{CHAMPION}")
    users = ["u000001", "u000002", "nobody"]
    out = model.predict(pd.DataFrame({"user_id": users}), params={"k": 5})
    assert "nobody" not in set(out["user_id"])
    for _, group in out.groupby("user_id"):
        assert len(group) == 5 and group["item_id"].is_unique


def test_the_experiment_opens_in_the_classic_ml_view_of_the_mlflow_ui(trained):
    settings, _ = trained
    experiment = configure(settings).get_experiment_by_name(settings.mlflow_experiment)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == CLASSIC_ML_KIND == "custom_model_development"


def test_the_model_is_logged_on_the_winning_candidates_run(trained):
    settings, result = trained
    client = configure(settings)
    version = client.get_model_version(settings.registered_model_name, result.model_version)
    winner = client.get_run(version.run_id)
    assert version.run_id != result.run_id
    assert winner.data.tags["mlflow.parentRunId"] == result.run_id and winner.data.tags["model"] == result.best_model
    assert winner.data.metrics["ndcg_at_10"] == pytest.approx(result.metrics["als"]["ndcg_at_10"])
    logged = mlflow.get_logged_model(version.source.removeprefix("models:/"))
    assert logged.source_run_id == version.run_id and logged.name == "model"


def test_the_version_description_states_the_gates_verdict_and_that_the_pyfunc_gives_raw_scores(trained):
    settings, result = trained
    version = configure(settings).get_model_version(settings.registered_model_name, result.model_version)
    assert version.description.startswith("**Promoted to champion** (als): no champion yet; ndcg_at_10=")
    assert "returns raw model scores" in version.description and "unknown user gets no rows" in version.description


def test_the_training_data_is_logged_as_a_dataset_with_its_digest_and_warehouse_relation(trained):
    settings, result = trained
    client = configure(settings)
    version = client.get_model_version(settings.registered_model_name, result.model_version)
    for run_id in (result.run_id, version.run_id):
        (logged,) = client.get_run(run_id).inputs.dataset_inputs
        assert logged.dataset.source_type == "warehouse"
        assert json.loads(logged.dataset.source) == {"relation": "marts.interaction_events", "engine": "duckdb"}
        assert logged.dataset.name.startswith("marts.interaction_events@") and len(logged.dataset.digest) >= 8
        assert {tag.key: tag.value for tag in logged.tags}["mlflow.data.context"] == "training"
        profile = json.loads(logged.dataset.profile)
        assert profile["num_rows"] > 1000


# --- the gate on real trainings (popularity, then popularity + ALS, then popularity alone)


def test_a_better_challenger_is_promoted(retrained):
    settings, (first, better, _) = retrained
    assert first.promoted and first.decision_reason.startswith("no champion yet")
    assert better.best_model == "als" and better.promoted
    assert all(check.startswith("pass") for check in better.checks) and len(better.checks) == 4


def test_a_worse_challenger_is_not_promoted_and_the_reasons_are_logged(retrained):
    settings, (_, better, worse) = retrained
    client = configure(settings)
    name = settings.registered_model_name
    assert not worse.promoted
    assert str(version_by_alias(client, name, CHAMPION).version) == better.model_version
    assert str(version_by_alias(client, name, CHALLENGER).version) == worse.model_version
    run = client.get_run(worse.run_id).data.tags
    assert run["promotion.decision"] == "rejected"
    assert run["promotion.check.lift"].startswith("FAIL lift: ndcg_at_10 challenger")
    assert run["promotion.basis"] == "champion's recipe re-fitted on the same folds"
    version = client.get_model_version(name, worse.model_version).tags
    assert version["promotion.decision"] == "rejected" and "FAIL lift" in version["promotion.reason"]


def test_the_champions_recipe_is_refitted_on_the_challengers_folds(retrained):
    settings, (_, better, worse) = retrained
    client = configure(settings)
    refit = [run for run in child_runs(client, worse.run_id) if run.data.tags.get("role") == "champion"]
    assert [run.data.tags["mlflow.runName"] for run in refit] == [f"champion v{better.model_version} (als)"]
    # same data, same recipe, same seed: the champion scores what it scored when it was trained
    primary = better.primary_metric
    assert refit[0].data.metrics[primary] == pytest.approx(better.metrics["als"][primary], rel=0.02)


def test_promotions_are_recorded_in_the_champion_history(retrained):
    settings, (first, better, _) = retrained
    history = champion_history(configure(settings), settings.registered_model_name)
    assert history == [first.model_version, better.model_version]


def test_the_decision_and_each_check_are_written_to_the_task_log(trained, tmp_path, caplog):
    settings = copy_home(trained[0], tmp_path / "home", train_candidates=["popularity"])
    with caplog.at_level(logging.INFO, logger="pipelines.training.train"):
        result = train_and_register(settings)
    assert not result.promoted
    lines = [r.getMessage() for r in caplog.records if r.name == "pipelines.training.train"]
    assert any(line.startswith("gate: popularity v2 not promoted") for line in lines)
    assert sum(line.startswith("gate check: ") for line in lines) == 4


# --- gate rules (numbers chosen by hand; the registry side on a real MLflow)


BASE = {"ndcg_at_10": 0.20, "segment.cold.ndcg_at_10": 0.10, "coverage_at_10": 0.50, "exposure_gini_at_10": 0.60}


def test_a_guardrail_regression_is_rejected_even_with_a_better_ndcg(retrained, tmp_path):
    settings = copy_home(retrained[0], tmp_path / "home")
    challenger = {**BASE, "ndcg_at_10": 0.30, "segment.cold.ndcg_at_10": 0.08}  # 20% worse on cold users
    decision = decide(settings, challenger, BASE, "2", "test")
    assert not decision.promoted
    assert [c.name for c in decision.failed] == ["guardrail_segment_cold_ndcg_at_10"]

    client = configure(settings)
    name = settings.registered_model_name
    source = client.get_model_version(name, "2")
    candidate = client.create_model_version(name, source.source, run_id=source.run_id)
    apply_decision(client, settings, str(candidate.version), decision)
    assert str(version_by_alias(client, name, CHAMPION).version) == "2"
    assert str(version_by_alias(client, name, CHALLENGER).version) == str(candidate.version)
    tags = client.get_model_version(name, str(candidate.version)).tags
    assert tags["promotion.check.guardrail_segment_cold_ndcg_at_10"].startswith("FAIL")
    assert tags["promotion.check.lift"].startswith("pass")


def test_a_coverage_drop_beyond_tolerance_is_rejected(tmp_path, settings):
    decision = decide(settings, {**BASE, "ndcg_at_10": 0.25, "coverage_at_10": 0.40}, BASE, "1", "test")
    assert [c.name for c in decision.failed] == ["guardrail_coverage_at_10"]


def test_an_exposure_gini_rise_beyond_tolerance_is_rejected_with_its_reason(settings):
    """The exposure guardrail: a better NDCG bought by piling the slots onto fewer items does not pass."""
    assert settings.gate_max_gini_rise == 0.02
    decision = decide(settings, {**BASE, "ndcg_at_10": 0.25, "exposure_gini_at_10": 0.63}, BASE, "1", "test")
    assert not decision.promoted and [c.name for c in decision.failed] == ["guardrail_exposure_gini"]
    assert "exposure_gini_at_10 challenger 0.6300" in decision.reason() and "needs <= 0.6200" in decision.reason()
    assert "gate_max_gini_rise" in decision.tags()["promotion.check.guardrail_exposure_gini"]
    assert decide(settings, {**BASE, "ndcg_at_10": 0.25, "exposure_gini_at_10": 0.615}, BASE, "1", "test").promoted
    assert decide(settings, {**BASE, "ndcg_at_10": 0.25, "exposure_gini_at_10": 0.30}, BASE, "1", "test").promoted


def test_a_drop_within_tolerance_passes(settings):
    # better on the primary metric (a tie no longer passes the lift check), within tolerance on both guardrails
    challenger = {**BASE, "ndcg_at_10": 0.21, "segment.cold.ndcg_at_10": 0.096, "coverage_at_10": 0.46}
    assert decide(settings, challenger, BASE, "1", "test").promoted


def test_the_lift_setting_raises_the_bar(settings):
    lifted = settings.model_copy(update={"promotion_min_lift": 0.05})
    assert decide(settings, {**BASE, "ndcg_at_10": 0.205}, BASE, "1", "test").promoted
    decision = decide(lifted, {**BASE, "ndcg_at_10": 0.205}, BASE, "1", "test")
    assert not decision.promoted and "needs > 0.2100" in decision.reason()


def test_a_tie_keeps_the_champion_by_default(settings):
    """Tie policy: an identical retrain scores exactly the champion's numbers and must not replace it."""
    assert settings.promotion_allow_tie is False and settings.promotion_min_lift == 0
    decision = decide(settings, dict(BASE), BASE, "1", "test")
    assert not decision.promoted and [c.name for c in decision.failed] == ["lift"]
    assert "needs > 0.2000" in decision.reason() and "a tie keeps the champion" in decision.reason()


def test_a_tie_promotes_the_fresher_model_when_ties_are_allowed(settings):
    allowed = settings.model_copy(update={"promotion_allow_tie": True})
    decision = decide(allowed, dict(BASE), BASE, "1", "test")
    assert decision.promoted and "needs >= 0.2000" in decision.checks[0].describe()
    assert not decide(allowed, {**BASE, "ndcg_at_10": 0.1999}, BASE, "1", "test").promoted


def test_the_gate_refuses_metrics_it_cannot_compare(settings):
    with pytest.raises(ValueError, match=r"needs \['coverage_at_10'\]"):
        decide(settings, {k: v for k, v in BASE.items() if k != "coverage_at_10"}, BASE, "1", "test")


def test_the_gate_names_a_champion_measured_at_other_cut_offs(settings):
    at_20 = settings.model_copy(update={"eval_k": 20})
    challenger = {key.replace("_at_10", "_at_20"): value for key, value in BASE.items()}
    with pytest.raises(ValueError) as refused:
        decide(at_20, challenger, BASE, "1", "test")
    message = str(refused.value)
    assert (
        "the champion lacks ['ndcg_at_20', 'segment.cold.ndcg_at_20', 'coverage_at_20', 'exposure_gini_at_20']"
        in message
    )
    assert "but has ['coverage_at_10', 'exposure_gini_at_10', 'ndcg_at_10', 'segment.cold.ndcg_at_10']" in message
    assert "measured at other cut-offs than eval_k=20" in message and "the challenger lacks" not in message


def test_a_champion_whose_recipe_is_gone_is_compared_on_its_recorded_metrics(trained, tmp_path):
    settings = copy_home(trained[0], tmp_path / "home", train_candidates=["popularity"])
    client = configure(settings)
    champion = version_by_alias(client, settings.registered_model_name, CHAMPION)
    client.set_model_version_tag(settings.registered_model_name, champion.version, "model", "retired_algorithm")
    result = train_and_register(settings)
    basis = client.get_run(result.run_id).data.tags["promotion.basis"]
    assert basis.startswith(f"recorded metrics of champion v{champion.version}") and "not the same folds" in basis
    assert not result.promoted


class BrokenRecommender(Recommender):
    """An algorithm that cannot be fitted: stands for a candidate that breaks on some data."""

    name = "broken_test"

    def _fit(self, interactions) -> None:
        raise RuntimeError("cannot fit on this data")

    def _score(self, user_index):
        raise AssertionError("never fitted")


def test_a_failing_candidate_is_left_out_and_recorded_while_the_others_train(trained, tmp_path):
    settings = copy_home(trained[0], tmp_path / "home", train_candidates=["broken_test", "popularity"])
    result = train_and_register(settings)
    assert result.best_model == "popularity" and list(result.metrics) == ["popularity"]
    assert result.failures == {"broken_test": "RuntimeError: cannot fit on this data"}
    client = configure(settings)
    assert "broken_test: RuntimeError" in client.get_run(result.run_id).data.tags["failed_candidates"]
    broken = next(run for run in child_runs(client, result.run_id) if run.data.tags["model"] == "broken_test")
    assert broken.info.status == "FAILED" and broken.data.tags["error"] == "RuntimeError: cannot fit on this data"
    assert "Candidates that failed" in result.report.read_text()


def test_training_fails_naming_every_error_when_no_candidate_can_be_fitted(trained, tmp_path):
    settings = copy_home(trained[0], tmp_path / "home", train_candidates=["broken_test"])
    with pytest.raises(RuntimeError, match="every candidate failed: broken_test: RuntimeError: cannot fit"):
        train_and_register(settings)
    client = configure(settings)
    assert str(version_by_alias(client, settings.registered_model_name, CHAMPION).version) == trained[1].model_version


def test_a_time_aware_algorithm_plugs_in_by_name_and_its_registered_version_recommends(trained, tmp_path):
    settings = copy_home(trained[0], tmp_path / "home", train_candidates=["popularity_recent"])
    result = train_and_register(settings)
    assert result.best_model == "popularity_recent" and result.metrics["popularity_recent"][result.primary_metric] > 0
    configure(settings)
    model = mlflow.pyfunc.load_model(f"models:/{settings.registered_model_name}/{result.model_version}")
    out = model.predict(pd.DataFrame({"user_id": ["u000002"]}), params={"k": 4})
    assert len(out) == 4 and out["item_id"].is_unique


def test_training_at_another_eval_k_names_every_metric_by_it_and_promotes(built, tmp_path):
    settings = copy_home(built, tmp_path / "home", eval_k=20, train_candidates=["popularity"])
    result = train_and_register(settings)
    assert result.promoted and result.primary_metric == "ndcg_at_20"
    client = configure(settings)
    champion = version_by_alias(client, settings.registered_model_name, CHAMPION)
    assert str(champion.version) == result.model_version
    metrics = client.get_run(champion.run_id).data.metrics
    assert {"ndcg_at_20", "segment.cold.ndcg_at_20", "coverage_at_20", "recall_at_50"} <= set(metrics)
    assert not [name for name in metrics if "_at_10" in name]
    assert result.outcome()["champion_metadata"] == {
        "model": "popularity",
        "version": result.model_version,
        "ndcg_at_20": result.metrics["popularity"]["ndcg_at_20"],
    }


def test_a_champion_trained_at_another_eval_k_is_refitted_under_this_eval_k(trained, tmp_path):
    settings = copy_home(trained[0], tmp_path / "home", eval_k=20, train_candidates=["popularity"])
    result = train_and_register(settings)
    run = configure(settings).get_run(result.run_id).data.tags
    assert run["promotion.basis"] == "champion's recipe re-fitted on the same folds"
    assert run["promotion.check.lift"].startswith("FAIL lift: ndcg_at_20 challenger")


def test_a_champion_recorded_at_another_eval_k_is_not_comparable_and_the_gate_says_why(trained, tmp_path):
    settings = copy_home(trained[0], tmp_path / "home", eval_k=20, train_candidates=["popularity"])
    client = configure(settings)
    champion = version_by_alias(client, settings.registered_model_name, CHAMPION)
    client.set_model_version_tag(settings.registered_model_name, champion.version, "model", "retired_algorithm")
    result = train_and_register(settings)
    assert not result.promoted
    lacks = "the champion lacks ['ndcg_at_20', 'segment.cold.ndcg_at_20', 'coverage_at_20', 'exposure_gini_at_20']"
    assert lacks in result.decision_reason
    has = "but has ['coverage_at_10', 'exposure_gini_at_10', 'ndcg_at_10', 'segment.cold.ndcg_at_10']"
    assert has in result.decision_reason
    assert "measured at other cut-offs than eval_k=20" in result.decision_reason
