"""The scaled-out configuration, on real servers: Airflow on PostgreSQL with Celery on Redis,
and an MLflow tracking server backed by PostgreSQL."""

import time
from datetime import UTC, date, datetime, timedelta

import psycopg2
import pytest
from mlflow import MlflowClient

from pipelines.ingest import ingest_interval
from pipelines.publication.publish import current_version
from pipelines.runtime.local_airflow import RESPONSIVE_SCHEDULING
from pipelines.runtime.processes import free_port
from pipelines.runtime.scaled import ScaledStack
from pipelines.simulate import simulate
from pipelines.training.tracking import CHAMPION
from pipelines.training.train import train_and_register
from pipelines.warehouse.connection import connect
from pipelines.warehouse.transform import build_warehouse
from tests.conftest import copy_home, make_settings
from tests.services import PG

pytestmark = pytest.mark.scaled


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
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}: {dag_run_states(stack.airflow_database)}")


# Everything a run writes except when it wrote it. Mart weights are rounded: DuckDB's parallel sums
# may add the same terms in another order, which changes the last bit of a double, not the data.
WAREHOUSE_QUERIES = {
    "raw.events": "select * exclude (ingested_at) from raw.events order by batch_id, event_id",
    "quarantine.events": "select * exclude (ingested_at) from quarantine.events order by batch_id, line_number",
    "raw.batches": (
        "select batch_id, source, interval_start, interval_end, file, rows_input, rows_accepted, rows_quarantined, "
        "quarantined_by_reason, landing_date, rows_late from raw.batches order by batch_id"
    ),
    "marts.interactions": "select * replace (round(weight, 9) as weight) from marts.interactions order by all",
    "marts.item_features": "select * from marts.item_features order by item_id",
    "marts.user_features": "select * from marts.user_features order by user_id",
}


def warehouse_rows(settings, tables: list[str]) -> dict[str, list[tuple]]:
    with connect(settings) as con:
        return {table: con.execute(WAREHOUSE_QUERIES[table]).fetchall() for table in tables}


def test_a_30_day_backfill_on_celery_equals_30_daily_runs_and_feeds_the_asset_chain(
    tmp_path, monkeypatch, new_postgres_database, redis_db
):
    """`airflow backfill create` over 30 days, run by the scheduler on Celery workers with PostgreSQL
    metadata, leaves the same warehouse row for row as 30 daily runs; then the Asset chain
    transform -> drift -> train -> publish runs on the same stack."""
    airflow_db, mlflow_db = new_postgres_database(), new_postgres_database()
    days, first_day = 30, date(2026, 1, 1)
    settings = make_settings(
        tmp_path / "home", sim_days=days, test_days=5, valid_days=5, sim_users=120, sim_items=80,
        ingest_start_date=first_day, ingest_end_date=first_day + timedelta(days=days - 1),
        # Only drift should start training here: a cron tick that never came since the DAG's start date.
        train_cron="0 4 29 2 *",
    )  # fmt: skip
    simulate(settings)
    daily = copy_home(settings, tmp_path / "daily")
    for offset in range(days):  # what 30 daily scheduled runs do, one data interval each
        day = datetime.combine(first_day, datetime.min.time(), tzinfo=UTC) + timedelta(days=offset)
        ingest_interval(daily, day, day + timedelta(days=1))
    build_warehouse(daily)  # in-process dbt keeps its file open: only ever on the reference copy

    stack = ScaledStack(settings, airflow_db, mlflow_db, redis_db,
                        api_port=free_port(), mlflow_port=free_port(), log_server_port=free_port(),
                        # 60 short tasks: the demo's tighter scheduler loop, not a one-second sleep between each
                        extra_environment=RESPONSIVE_SCHEDULING)  # fmt: skip
    with stack:
        deadline = time.monotonic() + 120
        while parsed_dags(airflow_db) < 5:
            assert time.monotonic() < deadline, "DAGs were not parsed in time"
            time.sleep(0.5)
        # Backfill runs execute only for an unpaused DAG; the consumers stay paused meanwhile so that
        # none of them sees a half-loaded log.
        stack.airflow("dags", "unpause", "recforge_ingest")
        stack.airflow(
            "backfill", "create", "--dag-id", "recforge_ingest",
            "--from-date", first_day.isoformat(), "--to-date", (first_day + timedelta(days=days - 1)).isoformat(),
            "--reprocess-behavior", "completed", "--max-active-runs", "1",
        )  # fmt: skip
        wait_for(lambda s: s.get("recforge_ingest", {}).get("success") == days, stack, 900, "the backfill")
        runs = run_list(airflow_db)
        assert {run_type for dag_id, _, run_type, _, _ in runs if dag_id == "recforge_ingest"} == {"backfill"}

        raw_tables = [t for t in WAREHOUSE_QUERIES if not t.startswith("marts.")]
        backfilled, reference = warehouse_rows(settings, raw_tables), warehouse_rows(daily, raw_tables)
        assert len(reference["raw.batches"]) == days
        for table in raw_tables:
            assert len(backfilled[table]) == len(reference[table]) > 0, table
            assert backfilled[table] == reference[table], f"{table} differs between the backfill and the daily runs"

        # One CLI call (an Airflow start-up each) for the four consumers.
        stack.airflow("dags", "unpause", "--treat-dag-id-as-regex", "--yes",
                      "^recforge_(transform|drift|train|publish)$")  # fmt: skip
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
    # The marts Airflow's recforge_transform built from the backfill equal those of the daily runs.
    marts = [t for t in WAREHOUSE_QUERIES if t.startswith("marts.")]
    backfilled, reference = warehouse_rows(settings, marts), warehouse_rows(daily, marts)
    for table in marts:
        assert len(backfilled[table]) == len(reference[table]) > 0, table
        assert backfilled[table] == reference[table], f"{table} differs between the backfill and the daily runs"
    with psycopg2.connect(dbname=mlflow_db, **PG) as pg, pg.cursor() as cur:
        cur.execute("select count(*) from registered_model_aliases where alias = %s", (CHAMPION,))
        assert cur.fetchone()[0] == 1
