"""A 30-day backfill through Airflow's own backfill (`airflow backfill create`, run by the scheduler on
Celery workers) leaves the same warehouse, row for row, as 30 daily ingest runs."""

import time
from datetime import UTC, date, datetime, timedelta

import psycopg2
import pytest

from pipelines.ingest import ingest_interval
from pipelines.scaled import ScaledStack
from pipelines.simulate import simulate
from pipelines.transform import build_warehouse
from pipelines.warehouse import connect
from tests.conftest import copy_home, make_settings
from tests.services import PG
from tests.test_scaled_stack import free_port, parsed_dags

pytestmark = pytest.mark.scaled

DAYS = 30
FIRST_DAY = date(2026, 1, 1)

# Everything a run writes except when it wrote it.
WAREHOUSE_QUERIES = {
    "raw.events": "select * exclude (ingested_at) from raw.events order by batch_id, event_id",
    "quarantine.events": "select * exclude (ingested_at) from quarantine.events order by batch_id, line_number",
    "raw.batches": (
        "select batch_id, source, interval_start, interval_end, file, rows_input, rows_accepted, rows_quarantined, "
        "quarantined_by_reason, landing_date, rows_late from raw.batches order by batch_id"
    ),
    "marts.interactions": "select * from marts.interactions order by user_id, item_id",
    "marts.item_features": "select * from marts.item_features order by item_id",
    "marts.user_features": "select * from marts.user_features order by user_id",
}


def warehouse_rows(settings) -> dict[str, list[tuple]]:
    with connect(settings) as con:
        return {table: con.execute(sql).fetchall() for table, sql in WAREHOUSE_QUERIES.items()}


def ingest_runs(database: str) -> dict[str, int]:
    with psycopg2.connect(dbname=database, **PG) as pg, pg.cursor() as cur:
        cur.execute(
            "select run_type || ':' || state, count(*) from dag_run where dag_id = 'recforge_ingest' group by 1"
        )
        return dict(cur.fetchall())


def test_a_30_day_backfill_equals_30_daily_runs_row_for_row(tmp_path, new_postgres_database, redis_db):
    settings = make_settings(
        tmp_path / "backfilled", sim_days=DAYS, sim_users=120, sim_items=80, test_days=5, valid_days=5,
        ingest_start_date=FIRST_DAY, ingest_end_date=FIRST_DAY + timedelta(days=DAYS - 1),
    )  # fmt: skip
    simulate(settings)
    daily = copy_home(settings, tmp_path / "daily")
    for offset in range(DAYS):  # what 30 daily scheduled runs do, one interval each
        day = datetime.combine(FIRST_DAY, datetime.min.time(), tzinfo=UTC) + timedelta(days=offset)
        ingest_interval(daily, day, day + timedelta(days=1))

    airflow_db, mlflow_db = new_postgres_database(), new_postgres_database()
    stack = ScaledStack(settings, airflow_db, mlflow_db, redis_db,
                        api_port=free_port(), mlflow_port=free_port(), log_server_port=free_port())  # fmt: skip
    started = time.monotonic()
    with stack:
        deadline = time.monotonic() + 120
        while parsed_dags(airflow_db) < 5:
            assert time.monotonic() < deadline, "DAGs were not parsed in time"
            time.sleep(2)
        # Backfill runs only execute for an unpaused DAG; the downstream DAGs stay paused.
        stack.airflow("dags", "unpause", "recforge_ingest")
        stack.airflow(
            "backfill", "create", "--dag-id", "recforge_ingest",
            "--from-date", FIRST_DAY.isoformat(), "--to-date", (FIRST_DAY + timedelta(days=DAYS - 1)).isoformat(),
            "--reprocess-behavior", "completed", "--max-active-runs", "1",
        )  # fmt: skip
        deadline = time.monotonic() + 900
        while (runs := ingest_runs(airflow_db)).get("backfill:success", 0) < DAYS:
            stack.raise_if_exited()
            assert not any(k.endswith(":failed") for k in runs), f"ingest runs failed: {runs}; logs {stack.logs_dir}"
            assert time.monotonic() < deadline, f"backfill did not finish: {runs}"
            time.sleep(3)
        while any(k.endswith((":running", ":queued")) for k in ingest_runs(airflow_db)):
            time.sleep(2)  # a scheduled run the unpause created may still be replacing its day
    print(f"backfill of {DAYS} days through Celery: {time.monotonic() - started:.0f}s")

    build_warehouse(settings)
    build_warehouse(daily)
    backfilled, reference = warehouse_rows(settings), warehouse_rows(daily)
    assert len(reference["raw.batches"]) == DAYS
    for table in WAREHOUSE_QUERIES:
        assert len(backfilled[table]) == len(reference[table]) > 0, table
        assert backfilled[table] == reference[table], f"{table} differs between the backfill and the daily runs"
