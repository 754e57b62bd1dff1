"""The dbt project builds on PostgreSQL and gives the same marts as on DuckDB, on the same input.

Ingest writes the raw layer straight into PostgreSQL (no DuckDB file in between), as the
pipeline does with RECFORGE_DBT_TARGET=postgres.
"""

import hashlib
from datetime import date

import pandas as pd
import pytest

from pipelines.ingest import ingest_interval
from pipelines.warehouse.connection import connect
from pipelines.warehouse.transform import build_warehouse
from tests.conftest import copy_home, whole_log

pytestmark = pytest.mark.scaled

MARTS = {
    "interaction_events": ["event_id"],
    "interactions": ["user_id", "item_id"],
    "interactions_split": ["user_id", "item_id", "split"],
}


def fingerprint(frame: pd.DataFrame, keys: list[str]) -> tuple[int, str]:
    """Row count and a checksum that ignores row order and float noise in the last digits."""
    frame = frame.sort_values(keys).reset_index(drop=True)
    for column in frame.columns:
        if pd.api.types.is_float_dtype(frame[column]):
            frame[column] = frame[column].map(lambda v: f"{v:.9g}")
        elif pd.api.types.is_datetime64_any_dtype(frame[column]) or isinstance(frame[column].iloc[0], date):
            # DuckDB hands dates to pandas as datetime64, psycopg as datetime.date objects.
            frame[column] = pd.to_datetime(frame[column], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%S.%f")
    return len(frame), hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()


def test_postgres_marts_equal_duckdb_marts(simulated, built, tmp_path, postgres_database):
    settings = copy_home(simulated, tmp_path / "home", dbt_target="postgres", pg_database=postgres_database)
    ingested = ingest_interval(settings, *whole_log(settings))
    with connect(built, must_exist=True) as duck:
        assert ingested.rows_accepted == duck.execute("select count(*) from raw.events").fetchone()[0]
    result = build_warehouse(settings)
    assert result.nodes_ok == result.nodes_total
    assert not settings.warehouse_path.exists()

    with connect(built, must_exist=True) as duck, connect(settings, must_exist=True) as pg:
        for mart, keys in MARTS.items():
            columns = duck.execute(f"select * from marts.{mart} limit 0").fetch_df().columns.tolist()
            in_duckdb = duck.execute(f"select {', '.join(columns)} from marts.{mart}").fetch_df()
            in_postgres = pg.execute(f"select {', '.join(columns)} from marts.{mart}").fetch_df()
            assert fingerprint(in_postgres, keys) == fingerprint(in_duckdb, keys), mart
