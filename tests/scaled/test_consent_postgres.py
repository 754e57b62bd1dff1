"""The consent rule gives the same marts on PostgreSQL as on DuckDB (macros/consent.sql reads both)."""

import json

import pytest

from pipelines.ingest import ingest_interval
from pipelines.warehouse.connection import connect
from pipelines.warehouse.transform import build_warehouse
from tests.conftest import copy_home, whole_log
from tests.scaled.test_dbt_postgres import assert_same_rows

pytestmark = pytest.mark.scaled

SIGNALS = [  # (user rank by activity, personalization, hours after the log's first event)
    (0, False, 0),
    (1, False, 0),
    (1, True, 1),  # given again later: kept
    (2, "false", 2),  # the string form reads the same
]


def add_signals(settings, signals=SIGNALS, batch_id: str = "consent-batch") -> None:
    """Consent-carrying copies of a known event of each user, ingested now (portable SQL: both warehouses)."""
    with connect(settings) as con:
        users = [u for (u,) in con.execute("select user_id from raw.events group by user_id order by count(*) desc, "
                                           "user_id limit 3").fetchall()]  # fmt: skip
        for n, (rank, consent, hours) in enumerate(signals):
            con.execute(
                "insert into raw.events (event_id, user_id, item_id, event_type, event_ts, value, session_id, "
                "context, source, batch_id, landing_date, ingested_at, event_date) "
                "select ?, user_id, item_id, event_type, min_ts + cast(? as integer) * interval '1 hour', value, "
                "session_id, cast(? as json), source, ?, landing_date, current_timestamp, event_date "
                "from (select *, min(event_ts) over () as min_ts from raw.events) as e where user_id = ? "
                "order by event_id limit 1",
                [
                    f"{batch_id}-{n}",
                    hours,
                    json.dumps({"consent": {"personalization": consent}}),
                    batch_id,
                    users[rank],
                ],  # fmt: skip
            )


def test_postgres_consent_marts_equal_duckdb_ones(simulated, tmp_path, postgres_database):
    """The first build, then a plain (incremental) one after the most active user gives consent again."""
    duck = copy_home(simulated, tmp_path / "duck")
    pg = copy_home(simulated, tmp_path / "pg", dbt_target="postgres", pg_database=postgres_database)
    for settings in (duck, pg):
        ingest_interval(settings, *whole_log(settings))
        add_signals(settings)
        build_warehouse(settings)
    assert_same_consent_marts(duck, pg, withheld=2)
    for settings in (duck, pg):
        add_signals(settings, [(0, True, 3)], batch_id="consent-again")
        build_warehouse(settings)
    assert_same_consent_marts(duck, pg, withheld=1)


def assert_same_consent_marts(duck, pg, withheld: int) -> None:
    marts = {"consent_withheld_users": ["user_id"], "interaction_events": ["event_id"]}
    with connect(duck, must_exist=True) as d, connect(pg, must_exist=True) as p:
        assert d.execute("select count(*) from marts.consent_withheld_users").fetchone()[0] == withheld
        for mart, keys in marts.items():
            columns = d.execute(f"select * from marts.{mart} limit 0").fetch_df().columns.tolist()
            in_duckdb = d.execute(f"select {', '.join(columns)} from marts.{mart}").fetch_df()
            in_postgres = p.execute(f"select {', '.join(columns)} from marts.{mart}").fetch_df()
            assert_same_rows(in_postgres, in_duckdb, keys, mart)
