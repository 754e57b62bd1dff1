"""The dbt project builds on PostgreSQL and gives the same marts as on DuckDB, on the same input."""

import hashlib
from datetime import date

import pandas as pd
import pytest

from pipelines.postgres_raw import copy_raw_to_postgres, pg_connect
from pipelines.transform import build_warehouse
from pipelines.warehouse import connect
from tests.conftest import copy_home

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


def test_postgres_marts_equal_duckdb_marts(built, tmp_path, postgres_database):
    settings = copy_home(built, tmp_path / "home", dbt_target="postgres", pg_database=postgres_database)
    copied = copy_raw_to_postgres(settings)
    with connect(settings) as duck:
        assert copied["events"] == duck.execute("select count(*) from raw.events").fetchone()[0]
    result = build_warehouse(settings)
    assert result.nodes_ok == result.nodes_total

    with connect(settings) as duck, pg_connect(settings) as pg:
        for mart, keys in MARTS.items():
            columns = duck.execute(f"select * from marts.{mart} limit 0").fetch_df().columns.tolist()
            in_duckdb = duck.execute(f"select {', '.join(columns)} from marts.{mart}").fetch_df()
            in_postgres = pd.read_sql(f"select {', '.join(columns)} from marts.{mart}", pg)
            assert fingerprint(in_postgres, keys) == fingerprint(in_duckdb, keys), mart
