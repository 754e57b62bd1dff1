"""The scaled-out configuration, on real servers: Airflow on PostgreSQL with Celery on Redis,
and an MLflow tracking server backed by PostgreSQL."""

import socket

import psycopg2
import pytest
from mlflow import MlflowClient

from pipelines.scaled import ScaledStack
from pipelines.tracking import CHAMPION
from pipelines.train import train_and_register
from tests.conftest import copy_home
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
