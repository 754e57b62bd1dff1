"""recforge_forget through Airflow: ids from a file leave no trace anywhere under the home; ids in the
run's conf are kept by Airflow's metadata database, and the final search says so instead of passing."""

import json
import os
import subprocess
import sys

import pytest

from pipelines.privacy.scan import find_ids
from serving.format import current_version
from tests.conftest import copy_home, tiny_environment

pytestmark = pytest.mark.e2e

# Runs recforge_forget with Airflow's dag.test() in a fresh process, once per conf given as an argument.
DRIVER = """
import json, sys
from pipelines.runtime.airflow_home import configure_airflow
from pipelines.settings import get_settings
settings = get_settings()
configure_airflow(settings, "WARNING")
from airflow.dag_processing.dagbag import DagBag
dag = DagBag(str(settings.dags_dir)).get_dag("recforge_forget")
for conf in sys.argv[1:]:
    dag_run = dag.test(run_conf=json.loads(conf))
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    print("RESULT " + json.dumps({"state": str(dag_run.state), "tasks": states}))
"""


def run_forget_dag(settings, *confs: dict) -> list[dict]:
    env = {**os.environ, **tiny_environment(), "RECFORGE_HOME": str(settings.home), "PYTHONPATH": os.getcwd()}
    args = [json.dumps(conf) for conf in confs]
    run = subprocess.run([sys.executable, "-c", DRIVER, *args], env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    return [json.loads(line.removeprefix("RESULT ")) for line in run.stdout.splitlines() if line.startswith("RESULT ")]


def test_the_dag_forgets_users_named_in_a_file_and_nothing_under_the_home_names_them(published, tmp_path):
    settings = copy_home(published, tmp_path / "home")
    live = current_version(settings.published_dir)
    users = ["u000003", "u000010"]
    assert find_ids(settings.home, users)
    ids = tmp_path / "ids.txt"  # outside the home
    ids.write_text("\n".join(users) + "\n")
    [result] = run_forget_dag(settings, {"ids_file": str(ids)})
    assert result["state"] == "success" and set(result["tasks"].values()) == {"success"}
    assert set(result["tasks"]) == {
        "serving_deny_list", "landing", "warehouse", "models", "publications", "reports_and_logs", "finish",
    }  # fmt: skip
    assert find_ids(settings.home, users) == [] and current_version(settings.published_dir) != live


def test_ids_in_the_runs_conf_fail_the_final_search_because_airflow_keeps_them(published, tmp_path):
    settings = copy_home(published, tmp_path / "home")
    [result] = run_forget_dag(settings, {"user_ids": ["u000004"]})
    assert result["tasks"]["publications"] == "success" and result["tasks"]["finish"] == "failed"
    hits = {str(hit.path.relative_to(settings.home)) for hit in find_ids(settings.home, ["u000004"])}
    assert hits and all(path.startswith("airflow/airflow.db") for path in hits)
