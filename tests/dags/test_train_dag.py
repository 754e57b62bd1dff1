"""recforge_train through Airflow: a rejected challenger emits no CHAMPION event, a promotion does."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import copy_home, tiny_environment

pytestmark = pytest.mark.e2e

# Runs recforge_train with Airflow's dag.test() in a fresh process (Airflow must be configured before it
# is imported), once per argument (a JSON object of RECFORGE_* settings for that run), and reports the
# states of the gate's tasks and the CHAMPION asset events after each run.
DRIVER = """
import json, os, sys
from pipelines.runtime.airflow_home import configure_airflow
from pipelines.settings import get_settings
settings = get_settings()
configure_airflow(settings, "WARNING")
from airflow.dag_processing.dagbag import DagBag
from airflow.models.asset import AssetEvent
from airflow.utils.session import create_session
dag = DagBag(str(settings.dags_dir)).get_dag("recforge_train")
for overrides in sys.argv[1:]:
    os.environ.update(json.loads(overrides))  # the task reads its settings when it runs
    dag_run = dag.test()
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    with create_session() as session:
        events = [e.extra for e in session.query(AssetEvent).all() if e.asset.uri.endswith("/champion")]
    result = {"state": str(dag_run.state), "tasks": states, "events": events, "run_id": dag_run.run_id}
    print("RESULT " + json.dumps(result))
"""


@pytest.fixture(scope="module")
def dag_runs(trained, tmp_path_factory):
    """Against the ALS champion: popularity alone (worse: rejected), then the champion's own recipe with ties
    allowed (a tie on the same folds at lift 0: the fresher model is promoted). Returns (settings, runs)."""
    settings = copy_home(trained[0], tmp_path_factory.mktemp("train_dag") / "home")
    env = {
        **os.environ,
        **tiny_environment(),
        "RECFORGE_HOME": str(settings.home),
        "PYTHONPATH": os.getcwd(),
    }
    runs = [
        json.dumps({"RECFORGE_TRAIN_CANDIDATES": json.dumps(["popularity"])}),
        json.dumps(
            {"RECFORGE_TRAIN_CANDIDATES": json.dumps(["popularity", "als"]), "RECFORGE_PROMOTION_ALLOW_TIE": "true"}
        ),
    ]
    run = subprocess.run([sys.executable, "-c", DRIVER, *runs], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    results = [
        json.loads(line.removeprefix("RESULT ")) for line in run.stdout.splitlines() if line.startswith("RESULT ")
    ]
    return settings, results


def test_a_rejected_challenger_stops_before_the_champion_asset(dag_runs):
    _, (rejected, _) = dag_runs
    assert rejected["state"].endswith("success")
    assert rejected["tasks"]["train_and_register"].endswith("success")
    assert rejected["tasks"]["announce_champion"].endswith("skipped")
    assert rejected["events"] == []


def test_only_a_promotion_emits_the_champion_asset_with_its_version(dag_runs):
    _, (_, promoted) = dag_runs
    assert promoted["tasks"]["announce_champion"].endswith("success")
    assert len(promoted["events"]) == 1  # the rejected run before it added none
    event = promoted["events"][0]
    assert event["model"] == "als" and event["version"] == "3" and event["ndcg_at_10"] > 0


def test_each_mlflow_run_and_the_version_link_to_their_airflow_dag_run(dag_runs):
    from urllib.parse import quote

    from pipelines.training.tracking import configure

    settings, (_, promoted) = dag_runs
    client = configure(settings)
    version = client.get_model_version(settings.registered_model_name, promoted["events"][0]["version"])
    assert version.tags["airflow.dag_id"] == "recforge_train" and version.tags["airflow.run_id"] == promoted["run_id"]
    runs = client.search_runs(
        [client.get_experiment_by_name(settings.mlflow_experiment).experiment_id],
        filter_string=f"tags.`airflow.run_id` = '{promoted['run_id']}'",
    )
    assert {run.data.tags["mlflow.runName"] for run in runs} >= {"training", "als", "popularity"}
    for run in runs:
        assert run.data.tags["airflow.dag_id"] == "recforge_train"
        assert run.data.tags["airflow.logical_date"].startswith("20")
        task_page = f"/dags/recforge_train/runs/{quote(promoted['run_id'])}/tasks/train_and_register"
        assert run.data.tags["airflow.url"].startswith("http") and task_page in run.data.tags["airflow.url"]
