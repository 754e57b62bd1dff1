"""End to end: `recforge run` drives every DAG through Airflow on a tiny simulated log,
then the API (in-process) answers with exactly what was published.
"""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from pipelines.publish import current_version
from pipelines.tracking import CHAMPION, configure, version_by_alias
from serving.config import ServingSettings
from serving.main import create_app
from tests.conftest import TINY, make_settings

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pipeline_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("e2e") / "home"
    env = {
        **os.environ,
        "RECFORGE_HOME": str(home),
        "RECFORGE_SERVE": "0",
        **{f"RECFORGE_{key.upper()}": str(value) for key, value in TINY.items()},
    }
    recforge = Path(sys.executable).with_name("recforge")
    run = subprocess.run([str(recforge), "run"], env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, f"recforge run failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    assert "sample user" in run.stdout and "Airflow UI" in run.stdout and "MLflow UI" in run.stdout
    return home


def test_airflow_metadata_holds_successful_runs_of_every_dag(pipeline_home):
    with sqlite3.connect(pipeline_home / "airflow" / "airflow.db") as con:
        runs = dict(con.execute("select dag_id, count(*) from dag_run where state = 'success' group by dag_id"))
        failed = con.execute("select count(*) from dag_run where state != 'success'").fetchone()[0]
    assert runs == {
        "recforge_ingest": TINY["sim_days"],
        "recforge_transform": 1,
        "recforge_train": 1,
        "recforge_publish": 1,
    }
    assert failed == 0


def test_mlflow_holds_the_runs_and_a_champion(pipeline_home):
    settings = make_settings(pipeline_home)
    client = configure(settings)
    champion = version_by_alias(client, settings.registered_model_name, CHAMPION)
    assert champion is not None
    experiment = client.get_experiment_by_name(settings.mlflow_experiment)
    assert len(client.search_runs([experiment.experiment_id])) == 3  # parent + popularity + als


def test_the_api_serves_what_was_published(pipeline_home):
    settings = make_settings(pipeline_home)
    version = current_version(settings.published_dir)
    live = settings.published_dir / version
    manifest = json.loads((live / "manifest.json").read_text())
    recs = pd.read_parquet(live / "user_recs.parquet")
    assert manifest["counts"]["user_rows"] == len(recs)
    with TestClient(create_app(ServingSettings(home=pipeline_home))) as client:
        assert client.get("/readyz").json() == {"ready": True, "version": version}
        for user in recs["user_id"].drop_duplicates().sample(5, random_state=0):
            body = client.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
            expected = recs[recs["user_id"] == user].sort_values("rank")["item_id"].head(10).tolist()
            assert [item["item_id"] for item in body["items"]] == expected
            assert len(set(expected)) == len(expected) == 10
            assert body["version"] == version and body["fallback"] is False
