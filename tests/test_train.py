import mlflow
import pandas as pd

from pipelines.tracking import CHALLENGER, CHAMPION, configure, version_by_alias
from pipelines.train import PRIMARY_METRIC, promote_if_better
from tests.conftest import copy_home


def test_als_beats_popularity_on_held_out_days(trained):
    _, result = trained
    assert result.metrics["als"][PRIMARY_METRIC] > 1.2 * result.metrics["popularity"][PRIMARY_METRIC]
    assert result.best_model == "als"


def test_training_logs_a_parent_run_with_a_nested_run_per_candidate(trained):
    settings, result = trained
    client = configure(settings)
    parent = client.get_run(result.run_id)
    assert parent.data.tags["data_snapshot"] and parent.data.tags["code_version"]
    assert parent.data.tags["promotion.decision"] == "promoted"
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'"
    )
    assert sorted(run.data.tags["model"] for run in children) == ["als", "popularity"]
    for run in children:
        assert PRIMARY_METRIC in run.data.metrics and "recall_at_50" in run.data.metrics


def test_the_first_model_becomes_champion(trained):
    settings, result = trained
    champion = version_by_alias(configure(settings), settings.registered_model_name, CHAMPION)
    assert champion is not None and str(champion.version) == result.model_version


def test_the_registered_model_loads_and_recommends_on_its_own(trained):
    settings, _ = trained
    configure(settings)
    model = mlflow.pyfunc.load_model(f"models:/{settings.registered_model_name}@{CHAMPION}")
    users = ["u000001", "u000002", "nobody"]
    out = model.predict(pd.DataFrame({"user_id": users}), params={"k": 5})
    known = set(out["user_id"])
    assert "nobody" not in known
    for _, group in out.groupby("user_id"):
        assert len(group) == 5 and group["item_id"].is_unique


def test_a_worse_challenger_is_not_promoted_and_a_better_one_is(trained, tmp_path):
    settings = copy_home(trained[0], tmp_path / "home", promotion_min_lift=0.05)
    client = configure(settings)
    name = settings.registered_model_name
    champion = version_by_alias(client, name, CHAMPION)
    champion_score = client.get_run(champion.run_id).data.metrics[PRIMARY_METRIC]
    candidate = client.create_model_version(name, champion.source, run_id=champion.run_id)

    promoted, reason = promote_if_better(client, settings, candidate, champion_score * 1.01)
    assert not promoted and "needed to replace champion" in reason
    assert version_by_alias(client, name, CHAMPION).version == champion.version
    assert version_by_alias(client, name, CHALLENGER).version == candidate.version

    promoted, _ = promote_if_better(client, settings, candidate, champion_score * 1.10)
    assert promoted
    assert version_by_alias(client, name, CHAMPION).version == candidate.version
