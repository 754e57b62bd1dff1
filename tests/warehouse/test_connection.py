"""The Warehouse interface's PostgreSQL side: placeholders and bulk loads, on a real server."""

import math
from datetime import UTC, datetime

import duckdb
import pandas as pd
import pytest

from pipelines.warehouse.connection import connect, postgres_placeholders
from tests.conftest import make_settings


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("select ? , ?", "select %s , %s"),
        ("select '?', ?", "select '?', %s"),
        ("select 'it''s ?', ?", "select 'it''s ?', %s"),
        ('select "odd?name" from t where a = ?', 'select "odd?name" from t where a = %s'),
        ("select ? -- why? because\nfrom t", "select %s -- why? because\nfrom t"),
        ("select /* ? */ ?", "select /* ? */ %s"),
        ("select '100%' like ?", "select '100%%' like %s"),
        ("select 5 % ? -- 10%", "select 5 %% %s -- 10%%"),
        ("select 'unterminated ?", "select 'unterminated ?"),
    ],
)
def test_only_real_placeholders_become_percent_s(sql, expected):
    assert postgres_placeholders(sql) == expected


@pytest.mark.scaled
def test_a_bulk_load_keeps_nulls_empty_strings_quotes_newlines_and_times(postgres_database, tmp_path):
    settings = make_settings(tmp_path / "home", dbt_target="postgres", pg_database=postgres_database)
    when = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
    frame = pd.DataFrame(
        {
            "name": ["plain", "", None, 'say "hi", then\nleave', "100% ?"],
            "amount": [1.5, math.nan, -2.0, 0.0, 1e-9],
            "flag": [True, False, None, True, False],
            "at": [when, when, pd.NaT, when, when],
            "doc": ['{"a": 1}', "{}", None, '{"q": "x,y"}', "[]"],
        }
    )
    with connect(settings) as con:
        con.execute(
            "create table loaded (name varchar, amount double precision, flag boolean, at timestamptz, doc json)"
        )
        con.append_frame("loaded", frame)
        rows = con.execute("select name, amount, flag, at, doc::text from loaded").fetchall()
    assert len(rows) == 5
    by_name = {row[0]: row for row in rows}
    assert by_name[""][1] is None and by_name[""][2] is False  # '' stayed a string; NaN became NULL
    assert by_name[None][1:4] == (-2.0, None, None)
    assert by_name['say "hi", then\nleave'][4] == '{"q": "x,y"}'
    assert by_name["100% ?"][1] == 1e-9
    assert by_name["plain"][3] == when  # microseconds and the time zone survive


RECORDS = "select 'u' || (i % 7) as user_id, i::double precision / 4 as weight from generate_series(1, 25) as s(i)"


def streamed(settings, rows: int) -> list:
    with connect(settings) as warehouse:
        batches = list(warehouse.record_batches(RECORDS + " order by 2", rows=rows))
    assert all(batch.num_rows <= rows for batch in batches)
    return [row for batch in batches for row in zip(*(c.to_pylist() for c in batch.columns), strict=True)]


def test_record_batches_stream_a_result_in_bounded_arrow_batches(tmp_path):
    settings = make_settings(tmp_path / "home")
    rows = streamed(settings, rows=4)
    assert len(rows) == 25 and rows[0] == ("u1", 0.25) and rows[-1] == ("u4", 6.25)


@pytest.mark.scaled
def test_record_batches_give_the_same_rows_on_postgres(postgres_database, tmp_path):
    duck = make_settings(tmp_path / "duck")
    pg = make_settings(tmp_path / "pg", dbt_target="postgres", pg_database=postgres_database)
    assert streamed(pg, rows=4) == streamed(duck, rows=4)


def row_groups(settings, table: str) -> list[int]:
    with connect(settings) as warehouse:
        return [
            count
            for (count,) in warehouse.execute(
                f"select max(count) from pragma_storage_info('{table}') group by row_group_id order by row_group_id"
            ).fetchall()
        ]


def test_an_ingest_connection_writes_row_groups_of_the_setting(tmp_path):
    """A day's commit rewrites only the table's last, partly filled row group: the setting bounds it."""
    settings = make_settings(tmp_path / "home", warehouse_row_group_rows=2048)
    for day in range(3):  # three commits on three connections, as three daily runs
        with connect(settings, row_groups=True) as warehouse, warehouse.appending(closing=True):
            with warehouse.transaction():
                warehouse.execute("create table if not exists raw.numbers (n integer, day integer)")
                warehouse.execute("insert into raw.numbers select range, ? from range(3000)", [day])
    assert sum(row_groups(settings, "raw.numbers")) == 9000
    assert max(row_groups(settings, "raw.numbers")) == 2048 and len(row_groups(settings, "raw.numbers")) >= 5
    with connect(settings) as warehouse:  # any other connection: DuckDB's own size
        warehouse.execute("create table raw.wide as select range as n from range(9000)")
    assert row_groups(settings, "raw.wide") == [9000]


def test_an_ingest_connection_is_named_and_spills_as_if_opened(tmp_path):
    """Attaching (for the row group size) must not change the catalog's name or where DuckDB spills."""
    settings = make_settings(tmp_path / "home")
    with connect(settings) as warehouse:
        opened = warehouse.execute("select current_database(), current_setting('temp_directory')").fetchone()
    with connect(settings, row_groups=True) as warehouse:
        attached = warehouse.execute("select current_database(), current_setting('temp_directory')").fetchone()
    assert attached == opened == (settings.warehouse_path.stem, f"{settings.warehouse_path}.tmp")


def test_an_ingest_connection_joins_the_engine_this_process_already_holds(tmp_path):
    """dbt's engine stays open in-process after a build; DuckDB lets one engine hold a file, so the
    ingest connection then joins it (DuckDB's row group size) instead of failing."""
    settings = make_settings(tmp_path / "home", warehouse_row_group_rows=2048)
    held = duckdb.connect(str(settings.warehouse_path))  # as dbt-duckdb opens it
    try:
        with connect(settings, row_groups=True) as warehouse:
            warehouse.execute("create table raw.numbers as select range as n from range(9000)")
        assert held.execute("select count(*) from raw.numbers").fetchone() == (9000,)
    finally:
        held.close()
    assert row_groups(settings, "raw.numbers") == [9000]


def test_a_quote_in_the_warehouse_path_is_still_one_file(tmp_path):
    settings = make_settings(tmp_path / 'it\'s "home"')
    with connect(settings, row_groups=True) as warehouse:
        warehouse.execute("create table raw.t as select 1 as one")
    with connect(settings, must_exist=True) as warehouse:
        assert warehouse.execute("select one from raw.t").fetchone() == (1,)
    assert settings.warehouse_path.is_file()
