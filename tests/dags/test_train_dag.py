"""recforge_train through Airflow: a rejected challenger emits no CHAMPION event, a promotion does."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import TINY, copy_home

pytestmark = pytest.mark.e2e

# Runs recforge_train with Airflow's dag.test() in a fresh process (Airflow must be configured before it
# is imported), once per candidate list given as arguments, and reports the states of the gate's tasks
# and the CHAMPION asset events after each run.
DRIVER = """
import json, os, sys
from pipelines.runtime.orchestrate import configure_airflow
from pipelines.settings import get_settings
settings = get_settings()
configure_airflow(settings, "WARNING")
from airflow.dag_processing.dagbag import DagBag
from airflow.models.asset import AssetEvent
from airflow.utils.session import create_session
dag = DagBag(str(settings.dags_dir)).get_dag("recforge_train")
for candidates in sys.argv[1:]:
    os.environ["RECFORGE_TRAIN_CANDIDATES"] = candidates  # the task reads its settings when it runs
    dag_run = dag.test()
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    with create_session() as session:
        events = [e.extra for e in session.query(AssetEvent).all() if e.asset.uri.endswith("/champion")]
    print("RESULT " + json.dumps({"state": str(dag_run.state), "tasks": states, "events": events}))
"""


@pytest.fixture(scope="module")
def dag_runs(trained, tmp_path_factory):
    """Against the ALS champion: popularity alone (worse: rejected), then the champion's own recipe (a tie on
    the same folds at lift 0: the fresher model is promoted)."""
    settings = copy_home(trained[0], tmp_path_factory.mktemp("train_dag") / "home")
    env = {
        **os.environ,
        **{f"RECFORGE_{key.upper()}": str(value) for key, value in TINY.items()},
        "RECFORGE_HOME": str(settings.home),
        "PYTHONPATH": os.getcwd(),
    }
    runs = [json.dumps(["popularity"]), json.dumps(["popularity", "als"])]
    run = subprocess.run([sys.executable, "-c", DRIVER, *runs], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    return [json.loads(line.removeprefix("RESULT ")) for line in run.stdout.splitlines() if line.startswith("RESULT ")]


def test_a_rejected_challenger_stops_before_the_champion_asset(dag_runs):
    rejected, _ = dag_runs
    assert rejected["state"].endswith("success")
    assert rejected["tasks"]["train_and_register"].endswith("success")
    assert rejected["tasks"]["announce_champion"].endswith("skipped")
    assert rejected["events"] == []


def test_only_a_promotion_emits_the_champion_asset_with_its_version(dag_runs):
    _, promoted = dag_runs
    assert promoted["tasks"]["announce_champion"].endswith("success")
    assert len(promoted["events"]) == 1  # the rejected run before it added none
    event = promoted["events"][0]
    assert event["model"] == "als" and event["version"] == "3" and event["ndcg_at_10"] > 0
