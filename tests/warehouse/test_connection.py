"""The Warehouse interface's PostgreSQL side: placeholders and bulk loads, on a real server."""

import math
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from pipelines.warehouse.connection import SCHEMA_SQL as SCHEMA_SQL_AS_SHIPPED
from pipelines.warehouse.connection import connect, postgres_placeholders
from tests.conftest import copy_home, make_settings


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


def _row_group_sizes(settings, table: str) -> list[int]:
    with connect(settings) as con:
        rows = con.execute(
            f"select row_group_id, max(count) from pragma_storage_info('{table}') group by all"
        ).fetchall()
    return sorted(count for _, count in rows)


def test_appended_days_keep_the_warehouse_row_group_size_through_dbt_builds(built, tmp_path):
    """Three commits of 20,000 rows each stay three row groups at ROW_GROUP_SIZE (32,768); a writer at DuckDB's
    default size (122,880) would merge them into one at its next checkpoint, even in a table it never wrote.
    dbt's build in its own process (as Airflow's transform task runs it) attaches by its profile; an in-process
    build shares recforge's engine, and recforge's connection after it meets no file conflict."""
    from pipelines.warehouse.connection import ROW_GROUP_SIZE
    from pipelines.warehouse.transform import build_warehouse

    settings = copy_home(built, tmp_path / "home")
    for day in range(3):
        with connect(settings) as con, con.appending(closing=True):
            if day == 0:
                con.execute("create table raw.row_group_probe (n bigint)")
            con.execute(
                "insert into raw.row_group_probe select range from range(?, ?)", [day * 20_000, (day + 1) * 20_000]
            )
    assert _row_group_sizes(settings, "raw.row_group_probe") == [20_000] * 3
    # One small model is enough: any build's checkpoint would merge the probe's groups at another size.
    build_in_child = (
        "import sys; from pipelines.warehouse.transform import build_warehouse; from tests.conftest import "
        "make_settings; print(build_warehouse(make_settings(sys.argv[1]), select='stg_items').summary())"
    )
    child = subprocess.run([sys.executable, "-c", build_in_child, str(settings.home)], capture_output=True, text=True)
    assert child.returncode == 0, child.stderr[-2000:]
    assert _row_group_sizes(settings, "raw.row_group_probe") == [20_000] * 3
    build_warehouse(settings, select="stg_items")
    with connect(settings) as con:
        assert con.execute("select count(*), sum(n) from raw.row_group_probe").fetchone() == (
            60_000,
            sum(range(60_000)),
        )
    assert _row_group_sizes(settings, "raw.row_group_probe") == [20_000] * 3
    assert 20_000 < ROW_GROUP_SIZE < 40_000  # the probe's sizes above assume it


def test_the_warehouse_keeps_duckdbs_own_catalog_name_and_spill_directory(tmp_path):
    from pipelines.warehouse.connection import catalog_name

    assert catalog_name(tmp_path / "warehouse.duckdb") == "warehouse"
    assert catalog_name(tmp_path / "my.store.duckdb") == "my"
    assert catalog_name(tmp_path / ".hidden.duckdb") == "hidden"
    settings = make_settings(tmp_path / "home")
    with connect(settings) as con:
        assert con.execute("select current_database()").fetchone()[0] == "warehouse"
        # spills go beside the file, as for a file opened by path (an in-memory database's default is ./.tmp)
        assert con.execute("select current_setting('temp_directory')").fetchone()[0] == f"{settings.warehouse_path}.tmp"


def test_an_engine_that_spilled_to_disk_is_still_opened_by_recforge_and_by_dbt(built, tmp_path):
    """DuckDB refuses to set an engine's spill directory once it has spilled there, even to the same path; every
    connection used to SET it, so at the 1M-user scale the second connection (and dbt's next cursor) failed."""
    from pipelines.warehouse.connection import temp_directory
    from pipelines.warehouse.transform import build_warehouse

    settings = copy_home(built, tmp_path / "home")
    with connect(settings) as first:
        first.execute("set threads = 1")  # one thread's buffers: a spill, not an out-of-memory error
        first.execute("set memory_limit = '64MB'")
        # about 150 MB of temp table under a 64 MB limit: it cannot stay in memory (a sort of less may, or not)
        first.execute(
            "create temp table spilled as "
            "select md5(range::varchar) || md5((range + 1)::varchar) as s from range(2000000)"
        )
        assert Path(temp_directory(settings.warehouse_path)).is_dir()  # it did spill
        with connect(settings) as second:  # the same engine, already spilled
            assert second.execute("select count(*) from raw.events").fetchone()[0] > 0
        assert build_warehouse(settings, select="stg_items").nodes_total > 0  # in-process dbt: the same engine
        assert first.execute("select count(*) from spilled").fetchone()[0] == 2_000_000


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.scaled)])
def engine_settings(request, tmp_path):
    """A fresh home on either engine (PostgreSQL: a database of its own)."""
    if request.param == "duckdb":
        return make_settings(tmp_path / "home")
    database = request.getfixturevalue("postgres_database")
    return make_settings(tmp_path / "home", dbt_target="postgres", pg_database=database)


def test_opening_applies_the_schema_once_and_records_its_fingerprint(engine_settings, tmp_path, monkeypatch):
    from pipelines.warehouse import connection

    with connect(engine_settings) as con:
        assert con.execute("select fingerprint from monitoring.schema_applied").fetchall() == [
            (connection.SCHEMA_FINGERPRINT,)
        ]
    # While the fingerprint matches, the file is not run again: a broken file goes unnoticed...
    broken = tmp_path / "schema.sql"
    broken.write_text("create table this is not sql;")
    monkeypatch.setattr(connection, "SCHEMA_SQL", broken)
    with connect(engine_settings) as con:
        assert con.execute("select count(*) from raw.events").fetchone()[0] == 0
    # ...until the file changes (a new fingerprint): then it runs, and a failure records nothing.
    monkeypatch.setattr(connection, "SCHEMA_FINGERPRINT", "changed")
    with pytest.raises(Exception, match="(?i)syntax"), connect(engine_settings):
        pass
    monkeypatch.setattr(connection, "SCHEMA_SQL", SCHEMA_SQL_AS_SHIPPED)
    with connect(engine_settings) as con:
        assert con.execute("select fingerprint from monitoring.schema_applied").fetchall() == [("changed",)]


def test_a_changed_schema_file_is_applied_to_an_existing_warehouse(engine_settings, tmp_path, monkeypatch):
    from pipelines.warehouse import connection

    with connect(engine_settings) as con:
        con.execute(
            "insert into raw.skipped_files (source, landing_date, file, reason, skipped_at) "
            "values ('s', null, 'f', 'r', current_timestamp)"
        )
    grown = tmp_path / "schema.sql"
    grown.write_text(
        SCHEMA_SQL_AS_SHIPPED.read_text() + "\nalter table raw.skipped_files add column if not exists note varchar;\n"
    )
    monkeypatch.setattr(connection, "SCHEMA_SQL", grown)
    monkeypatch.setattr(connection, "SCHEMA_FINGERPRINT", "grown")
    with connect(engine_settings) as con:
        assert con.execute("select file, note from raw.skipped_files").fetchall() == [("f", None)]  # kept, widened
        assert con.execute("select fingerprint from monitoring.schema_applied").fetchall() == [("grown",)]
