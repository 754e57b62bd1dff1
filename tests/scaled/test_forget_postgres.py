"""Forgetting on the PostgreSQL target: after `forget_users`, no table of the database and no file of
the home names the user (the database searched column by column, every text and JSON value)."""

from datetime import timedelta

import pytest

from pipelines.ingest import ingest_interval
from pipelines.privacy.forget import forget_users
from pipelines.privacy.retention import purge_expired
from pipelines.privacy.scan import find_ids
from pipelines.warehouse.connection import connect
from tests.conftest import copy_home, whole_log
from tests.ingest.test_impressions_ingest import slate, write_impressions
from tests.scaled.test_pipeline_postgres import run_on_postgres

pytestmark = pytest.mark.scaled


def tables_naming(settings, user: str) -> list[str]:
    """Every schema.table.column of the database (system schemas aside) holding the id in its text."""
    with connect(settings, must_exist=True) as con:
        columns = con.execute(
            "select table_schema, table_name, column_name from information_schema.columns "
            "where table_schema not in ('pg_catalog', 'information_schema') "
            "and data_type in ('text', 'character varying', 'json', 'jsonb')"
        ).fetchall()
        return [
            f"{schema}.{table}.{column}"
            for schema, table, column in columns
            if con.execute(
                f'select count(*) from "{schema}"."{table}" where strpos(cast("{column}" as text), ?) > 0', [user]
            ).fetchone()[0]
        ]


def test_a_forgotten_user_is_in_no_table_of_the_postgres_target_and_no_file(simulated, tmp_path, postgres_database):
    settings = copy_home(simulated, tmp_path / "home", dbt_target="postgres", pg_database=postgres_database)
    run_on_postgres(settings)
    user = "u000011"
    assert "raw.events.user_id" in tables_naming(settings, user) and find_ids(settings.home, [user])
    result = forget_users(settings, [user])
    assert result.verified is True
    assert tables_naming(settings, user) == []
    assert find_ids(settings.home, [user]) == []
    assert any("VACUUM FULL" in o.note for o in result.stores if o.store == "warehouse_file")


def test_retention_on_the_postgres_target_purges_old_events_and_slates_and_keeps_the_counts(
    simulated, tmp_path, postgres_database
):
    settings = copy_home(simulated, tmp_path / "home", dbt_target="postgres", pg_database=postgres_database,
                         retention_days=1)  # fmt: skip
    start, _ = whole_log(settings)
    days = [start + timedelta(days=n) for n in (2, 4)]
    for n, day in enumerate(days):
        write_impressions(settings.home, [slate(f"q{n}", ["i000001", "i000002"], served_at=day + timedelta(hours=9)),
                                          slate(f"b{n}", ["i000003"], served_at=day + timedelta(hours=9), scores=[])],
                          day=day)  # fmt: skip
        ingest_interval(settings, day, day + timedelta(days=1))
    cutoff = days[1]

    result = purge_expired(settings, now=cutoff + timedelta(days=1))

    removed = {o.store: o.rows_removed for o in result.stores}
    assert removed["raw_events"] > 0 and removed["impressions"] == 2 and removed["quarantine"] > 0
    with connect(settings, must_exist=True) as con:
        old = [
            con.execute(f"select count(*) from {table} where {column} < ?", [value]).fetchone()[0]
            for table, column, value in (
                ("raw.events", "event_ts", cutoff), ("raw.impression_items", "served_at", cutoff),
                ("quarantine.events", "landing_date", cutoff.date()),
                ("quarantine.impressions", "landing_date", cutoff.date()),
            )
        ]  # fmt: skip
        kept = con.execute("select distinct request_id from raw.impression_items").fetchall()
        unbalanced = con.execute(
            "select count(*) from raw.batches where rows_input <> rows_accepted + rows_quarantined"
        ).fetchone()[0]
    assert old == [0, 0, 0, 0] and kept == [("q1",)] and unbalanced == 0
    assert any("VACUUM FULL" in o.note for o in result.stores if o.store == "warehouse_file")
