"""With RECFORGE_DBT_TARGET=postgres the whole pipeline runs on PostgreSQL, without the DuckDB file.

Ingest writes raw.* into PostgreSQL, dbt builds the marts there, and validation, drift,
training and publication read them there; the published lists equal those the same input
gives on DuckDB.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.ingest import ingest_interval
from pipelines.monitoring.drift import check_drift
from pipelines.publication.publish import CURRENT, publish
from pipelines.settings import Settings
from pipelines.training.train import train_and_register
from pipelines.validation.checkpoints import validate_marts, validate_raw_batch
from pipelines.warehouse.connection import connect
from pipelines.warehouse.transform import build_warehouse
from tests.conftest import copy_home, whole_log

pytestmark = pytest.mark.scaled

TOP = 10


def run_on_postgres(settings: Settings) -> Path:
    """ingest -> validate -> transform -> validate -> drift -> train -> publish; the published version."""
    ingest = ingest_interval(settings, *whole_log(settings))
    validate_raw_batch(settings, *whole_log(settings))
    build_warehouse(settings)
    validate_marts(settings)
    check_drift(settings)
    train_and_register(settings)
    published = publish(settings)
    with connect(settings, must_exist=True) as con:
        accounting = con.execute(
            "select sum(rows_input), sum(rows_accepted), sum(rows_quarantined) from raw.batches"
        ).fetchone()
        suites = con.execute("select count(distinct suite) from monitoring.validation_runs").fetchone()[0]
        measures = con.execute("select count(*) from monitoring.drift_results").fetchone()[0]
    assert tuple(accounting) == (ingest.rows_input, ingest.rows_accepted, ingest.rows_quarantined)
    assert ingest.rows_quarantined > 0  # the simulated world sends bad rows: quarantine is exercised
    assert suites >= 3 and measures >= 1  # raw_batch, marts and publication suites; the drift check
    return published.path


def raw_accounting(settings: Settings) -> tuple:
    with connect(settings, must_exist=True) as con:
        return tuple(
            int(n)
            for n in con.execute(
                "select count(*), sum(rows_input), sum(rows_accepted), sum(rows_quarantined) from raw.batches"
            ).fetchone()
        )


def top_lists(user_recs: pd.DataFrame) -> dict[str, list[str]]:
    ranked = user_recs.sort_values(["user_id", "rank"])
    return {user: list(rows["item_id"].head(TOP)) for user, rows in ranked.groupby("user_id")}


def test_pipeline_on_postgres_publishes_the_lists_duckdb_publishes(simulated, published, tmp_path, postgres_database):
    """`published` is the same simulated world ingested, built, trained and published on DuckDB."""
    settings = copy_home(simulated, tmp_path / "home", dbt_target="postgres", pg_database=postgres_database)
    version = run_on_postgres(settings)
    assert not list(settings.home.rglob("*.duckdb")), "the postgres target created a DuckDB file"
    assert published.warehouse_path.exists()  # the reference really ran on DuckDB

    assert raw_accounting(settings) == raw_accounting(published)
    on_postgres = pd.read_parquet(version / "user_recs.parquet")
    current = (published.published_dir / CURRENT).read_text().strip()
    on_duckdb = pd.read_parquet(published.published_dir / current / "user_recs.parquet")
    pg_top, duck_top = top_lists(on_postgres), top_lists(on_duckdb)
    assert set(pg_top) == set(duck_top) and len(pg_top) > 0
    assert pg_top == duck_top
    keys = ["user_id", "rank"]
    pg_rows = on_postgres.sort_values(keys)[[*keys, "item_id", "score"]].reset_index(drop=True)
    duck_rows = on_duckdb.sort_values(keys)[[*keys, "item_id", "score"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(pg_rows[[*keys, "item_id"]], duck_rows[[*keys, "item_id"]])
    np.testing.assert_allclose(pg_rows["score"], duck_rows["score"], rtol=1e-4, atol=1e-6)
