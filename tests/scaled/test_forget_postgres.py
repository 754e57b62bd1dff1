"""Forgetting on the PostgreSQL target: after `forget_users`, no table of the database and no file of
the home names the user (the database searched column by column, every text and JSON value)."""

import pytest

from pipelines.privacy.forget import forget_users
from pipelines.privacy.scan import find_ids
from pipelines.warehouse.connection import connect
from tests.conftest import copy_home
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
