"""The dbt project builds on PostgreSQL and gives the same marts as on DuckDB, on the same input.

Ingest writes the raw layer straight into PostgreSQL (no DuckDB file in between), as the
pipeline does with RECFORGE_DBT_TARGET=postgres.
"""

from datetime import date, timedelta

import pandas as pd
import pytest

from pipelines.ingest import ingest_interval
from pipelines.warehouse.connection import connect
from pipelines.warehouse.transform import DATA_TESTS_RECORD, build_warehouse, data_tests_key, dbt_target_dir
from tests.conftest import copy_home, whole_log

pytestmark = pytest.mark.scaled

MARTS = {
    "interaction_events": ["event_id"],
    "interactions": ["user_id", "item_id"],
    "interactions_split": ["user_id", "item_id", "split"],
    "user_features": ["user_id"],
}


def assert_same_rows(left: pd.DataFrame, right: pd.DataFrame, keys: list[str], what: str) -> None:
    """The same rows in any order: equal counts, equal values, floats within 1e-9 relative (the engines sum
    in different orders). Rounding both to N digits instead fails whenever a sum sits on a rounding edge."""
    frames = []
    for frame in (left, right):
        frame = frame.sort_values(keys).reset_index(drop=True)
        for column in frame.columns:
            if pd.api.types.is_datetime64_any_dtype(frame[column]) or isinstance(frame[column].iloc[0], date):
                # DuckDB hands dates to pandas as datetime64, psycopg as datetime.date objects.
                frame[column] = pd.to_datetime(frame[column], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%S.%f")
        frames.append(frame)
    assert len(frames[0]) == len(frames[1]) > 0, what
    pd.testing.assert_frame_equal(frames[0], frames[1], check_exact=False, rtol=1e-9, atol=0, check_dtype=False,
                                  obj=what)  # fmt: skip


def test_postgres_marts_equal_duckdb_marts(simulated, built, tmp_path, postgres_database):
    """The log but its last day, built; then the last day, built again: the second build takes the per-user
    incremental models' plain-build path (macros/incremental_users.sql) on PostgreSQL, and drops and rebuilds an
    int_sessions from before it carried checksums (on-run-start); what it gives must equal DuckDB's build of the
    whole log at once."""
    settings = copy_home(simulated, tmp_path / "home", dbt_target="postgres", pg_database=postgres_database)
    start, end = whole_log(settings)
    ingested = [ingest_interval(settings, start, end - timedelta(days=1))]
    assert build_warehouse(settings).nodes_ok > 0
    with connect(settings, must_exist=True) as pg:  # int_sessions as built before it carried checksums
        pg.execute("alter table intermediate.int_sessions drop column event_checksum, drop column max_ingested_at")
    with connect(settings, must_exist=True) as pg:  # the first build passed every test: its record
        (first,) = pg.execute("select max(ingested_at) from intermediate.int_events_deduped").fetchone()
        assert pg.execute(f"select tests_key, passed_through from public.{DATA_TESTS_RECORD}").fetchall() == [
            (data_tests_key(settings), first)
        ]
    ingested.append(ingest_interval(settings, end - timedelta(days=1), end))
    with connect(built, must_exist=True) as duck:
        in_raw = duck.execute("select count(*) from raw.events").fetchone()[0]
    assert sum(i.rows_accepted for i in ingested) == in_raw and ingested[1].rows_accepted > 0
    result = build_warehouse(settings)
    assert result.nodes_ok == result.nodes_total
    # ... so the second build's data tests checked the rows ingested after it (macros/tests/changed_rows.sql).
    (unique,) = dbt_target_dir(settings).glob("compiled/recforge/models/*/*.yml/unique_int_events_deduped_event_id.sql")
    assert "where ingested_at > cast('" in unique.read_text()
    assert not settings.warehouse_path.exists()

    with connect(built, must_exist=True) as duck, connect(settings, must_exist=True) as pg:
        for mart, keys in MARTS.items():
            columns = duck.execute(f"select * from marts.{mart} limit 0").fetch_df().columns.tolist()
            in_duckdb = duck.execute(f"select {', '.join(columns)} from marts.{mart}").fetch_df()
            in_postgres = pg.execute(f"select {', '.join(columns)} from marts.{mart}").fetch_df()
            assert_same_rows(in_postgres, in_duckdb, keys, mart)
