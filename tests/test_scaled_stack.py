"""The scaled-out configuration, on real servers: Airflow on PostgreSQL with Celery on Redis,
and an MLflow tracking server backed by PostgreSQL."""

import socket
import time
from datetime import date

import psycopg2
import pytest
from mlflow import MlflowClient

from pipelines.publish import current_version
from pipelines.scaled import ScaledStack
from pipelines.simulate import simulate
from pipelines.tracking import CHAMPION
from pipelines.train import train_and_register
from tests.conftest import copy_home, make_settings
from tests.services import PG

pytestmark = pytest.mark.scaled


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_training_registers_a_champion_on_an_mlflow_server_backed_by_postgres(built, tmp_path, postgres_database):
    port = free_port()
    settings = copy_home(built, tmp_path / "home", mlflow_tracking_uri=f"http://127.0.0.1:{port}")
    stack = ScaledStack(settings, postgres_database, postgres_database, redis_url="", mlflow_port=port)
    stack.start_mlflow()
    try:
        stack.wait_until_ready(("mlflow",))
        result = train_and_register(settings)
        client = MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url)
        champion = client.get_model_version_by_alias(settings.registered_model_name, CHAMPION)
        assert str(champion.version) == result.model_version
        artifacts = [a.path for a in client.list_artifacts(result.run_id)]
        assert "reports" in artifacts
    finally:
        stack.stop()
    with psycopg2.connect(dbname=postgres_database, **PG) as pg, pg.cursor() as cur:
        cur.execute("select count(*) from model_versions where name = %s", (settings.registered_model_name,))
        assert cur.fetchone()[0] == 1  # the registry really lives in PostgreSQL


def dag_run_states(database: str) -> dict[str, dict[str, int]]:
    with psycopg2.connect(dbname=database, **PG) as pg, pg.cursor() as cur:
        cur.execute("select dag_id, state, count(*) from dag_run group by dag_id, state")
        states: dict[str, dict[str, int]] = {}
        for dag_id, state, n in cur.fetchall():
            states.setdefault(dag_id, {})[state] = n
    return states


def parsed_dags(database: str) -> int:
    with psycopg2.connect(dbname=database, **PG) as pg, pg.cursor() as cur:
        cur.execute("select count(*) from dag where dag_id like 'recforge_%%'")
        return cur.fetchone()[0]


def run_list(database: str) -> list[tuple]:
    with psycopg2.connect(dbname=database, **PG) as pg, pg.cursor() as cur:
        cur.execute("select dag_id, run_id, run_type, triggered_by, state from dag_run order by id")
        return cur.fetchall()


def wait_for(condition, stack: ScaledStack, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.raise_if_exited()
        states = dag_run_states(stack.airflow_database)
        failed = {d: s for d, s in states.items() if s.get("failed")}
        assert not failed, (
            f"DAG runs failed while waiting for {what}: {run_list(stack.airflow_database)}; logs in {stack.logs_dir}"
        )
        if condition(states):
            return states
        time.sleep(3)
    raise AssertionError(f"timed out waiting for {what}: {dag_run_states(stack.airflow_database)}")


def test_the_pipeline_runs_on_celery_workers_with_postgres_metadata(
    tmp_path, monkeypatch, new_postgres_database, redis_db
):
    airflow_db, mlflow_db = new_postgres_database(), new_postgres_database()
    days = 8
    settings = make_settings(
        tmp_path / "home", sim_days=days, test_days=2, valid_days=2, sim_users=250,
        # The scheduler itself runs the daily ingest for every simulated day (catchup over a bounded range).
        ingest_start_date=date(2026, 1, 1), ingest_end_date=date(2026, 1, days), ingest_catchup=True,
        # Only drift should start training here: a cron tick that never came since the DAG's start date.
        train_cron="0 4 29 2 *",
    )  # fmt: skip
    simulate(settings)
    stack = ScaledStack(settings, airflow_db, mlflow_db, redis_db,
                        api_port=free_port(), mlflow_port=free_port(), log_server_port=free_port())  # fmt: skip
    with stack:
        deadline = time.monotonic() + 120
        while parsed_dags(airflow_db) < 5:
            assert time.monotonic() < deadline, "DAGs were not parsed in time"
            time.sleep(2)
        # Ingest every day first; the consumers stay paused so no DAG sees a half-loaded log.
        stack.airflow("dags", "unpause", "recforge_ingest")
        wait_for(lambda s: s.get("recforge_ingest", {}).get("success") == settings.sim_days, stack, 480, "ingest")
        for dag_id in ("recforge_transform", "recforge_drift", "recforge_train", "recforge_publish"):
            stack.airflow("dags", "unpause", dag_id)
        stack.airflow("dags", "trigger", "recforge_transform")
        states = wait_for(
            lambda s: s.get("recforge_publish", {}).get("success", 0) >= 1
            and not any(s_.get("running") or s_.get("queued") for s_ in s.values()),
            stack, 480, "the asset chain to publish",
        )  # fmt: skip
    for dag_id in ("recforge_ingest", "recforge_transform", "recforge_drift", "recforge_train", "recforge_publish"):
        assert set(states[dag_id]) == {"success"}, (dag_id, states[dag_id])
    assert current_version(settings.published_dir) is not None
    assert stack.processes == {}  # stopped
    with psycopg2.connect(dbname=mlflow_db, **PG) as pg, pg.cursor() as cur:
        cur.execute("select count(*) from registered_model_aliases where alias = %s", (CHAMPION,))
        assert cur.fetchone()[0] == 1
