"""recforge_health through Airflow: a publication older than its level fails the run at
enforce_service_levels, naming the level, after the webhook heard of it once (and not again when
notify_operators runs a second time in the same run, as a retry does)."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import copy_home, tiny_environment
from tests.operations.test_health import Receiver

pytestmark = pytest.mark.e2e

DRIVER = """
import json
from pipelines.runtime.airflow_home import configure_airflow
from pipelines.settings import get_settings
settings = get_settings()
configure_airflow(settings, "WARNING")
from airflow.dag_processing.dagbag import DagBag
dag = DagBag(str(settings.dags_dir)).get_dag("recforge_health")
dag_run = dag.test()
states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
# notify_operators retried in the same run (what Airflow does on a retry: the task body again, same run id)
from pipelines.operations.health import notify
again = notify(settings, dag_run.run_id)
print("RESULT " + json.dumps({"state": str(dag_run.state), "tasks": states, "run_id": dag_run.run_id, "again": again}))
"""


def test_a_stale_publication_fails_the_health_dag_naming_publication_age(published, tmp_path):
    from pipelines.operations.health import stored

    hook = Receiver()
    settings = copy_home(published, tmp_path / "home")
    env = {
        **os.environ,
        **tiny_environment(),
        "RECFORGE_HOME": str(settings.home),
        "RECFORGE_SLO_PUBLICATION_AGE_HOURS": "0.0001",  # nothing published for longer than 0.36 s
        "RECFORGE_HEALTH_WEBHOOK_URL": hook.url,
        "PYTHONPATH": os.getcwd(),
    }
    try:
        run = subprocess.run([sys.executable, "-c", DRIVER], env=env, capture_output=True, text=True, timeout=600)
    finally:
        hook.close()
    assert run.returncode == 0, run.stderr[-4000:]
    (result,) = [json.loads(line[7:]) for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert result["state"].endswith("failed")
    assert result["tasks"]["measure_service_levels"].endswith("success")
    assert result["tasks"]["notify_operators"].endswith("success")
    assert result["tasks"]["enforce_service_levels"].endswith("failed")
    assert "ServiceLevelBreached: service level(s) breached: publication_age_hours" in run.stdout + run.stderr
    assert len(hook.posts) == 1 and "publication_age_hours" in hook.posts[0]["text"]
    assert result["again"] == f"already told for run {result['run_id']}"  # a retry never tells twice
    breached = [c.level for c in stored(copy_home(settings, tmp_path / "after"), result["run_id"]).breached]
    assert breached == ["publication_age_hours"]
