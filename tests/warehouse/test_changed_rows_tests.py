"""A day's data tests check the rows that can have changed since the last build that passed every test
(dbt_project/macros/tests/changed_rows.sql): the day costs in proportion to the day, and nothing new escapes."""

from datetime import timedelta

import pytest

from pipelines.ingest import ingest_interval
from pipelines.warehouse.connection import connect
from pipelines.warehouse.transform import (
    DATA_TESTS_RECORD,
    TransformError,
    build_warehouse,
    data_tests_key,
    dbt_target_dir,
)
from tests.conftest import copy_home, whole_log

RECORD = f"main.{DATA_TESTS_RECORD}"  # the target schema of the embedded warehouse


def recorded(settings) -> tuple:
    with connect(settings) as con:
        return con.execute(f"select tests_key, passed_through from {RECORD}").fetchall()


def newest_ingested(settings):
    with connect(settings) as con:
        return con.execute("select max(ingested_at) from intermediate.int_events_deduped").fetchone()[0]


def compiled_test(settings, name: str) -> str:
    """The SQL dbt ran for a data test in the last build."""
    (path,) = dbt_target_dir(settings).glob(f"compiled/recforge/models/*/*.yml/{name}.sql")
    return path.read_text()


@pytest.fixture
def day_before_last(simulated, tmp_path):
    """A home built through the day before the last: the last day is still to come."""
    settings = copy_home(simulated, tmp_path / "home")
    start, end = whole_log(settings)
    ingest_interval(settings, start, end - timedelta(days=1))
    build_warehouse(settings)
    return settings


def test_a_build_that_passes_records_how_far_and_the_next_day_tests_only_rows_changed_since(day_before_last):
    settings = day_before_last
    first = newest_ingested(settings)
    assert recorded(settings) == [(data_tests_key(settings), first)]
    # A history row broken behind dbt's back: the day's tests do not read it, a build checking every row does.
    with connect(settings) as con:
        broken = con.execute("select min(event_id) from intermediate.int_events_deduped").fetchone()[0]
        con.execute("update intermediate.int_events_deduped set batch_id = null where event_id = ?", [broken])
    start, end = whole_log(settings)
    ingest_interval(settings, end - timedelta(days=1), end)
    build_warehouse(settings)
    second = newest_ingested(settings)
    assert second > first and recorded(settings) == [(data_tests_key(settings), second)]
    unique = compiled_test(settings, "unique_int_events_deduped_event_id")
    with connect(settings) as con:  # as the warehouse writes it into the SQL (no trailing zeros in the fraction)
        first_text = con.execute("select cast(cast(? as timestamp) as varchar)", [first]).fetchone()[0]
    assert (
        f"ingested_at > cast('{first_text}' as timestamp)" in unique
    )  # every row whose id a row ingested after `first` has
    for scoped in ("not_null_interaction_events_user_id", "not_null_int_events_consented_user_id"):
        assert f"ingested_at > cast('{first_text}' as timestamp)" in compiled_test(settings, scoped), scoped
    assert "ingested_at >" not in compiled_test(settings, "not_null_int_sessions_user_id")  # not event grain
    # Every row: with the setting, and with any change of settings (another key); neither moves the record.
    everything = copy_home(settings, settings.home.parent / "all", dbt_tests_scope="all")
    with pytest.raises(TransformError, match="not_null_int_events_deduped_batch_id"):
        build_warehouse(everything)
    assert "ingested_at >" not in compiled_test(everything, "unique_int_events_deduped_event_id")
    reweighted = copy_home(settings, settings.home.parent / "reweighted", weight_click=3.0)
    assert data_tests_key(reweighted) != data_tests_key(settings)
    with pytest.raises(TransformError, match="not_null_int_events_deduped_batch_id"):
        build_warehouse(reweighted)
    assert recorded(everything) == recorded(reweighted) == [(data_tests_key(settings), second)]


def test_a_new_row_repeating_an_old_event_id_fails_the_days_unique_test_and_moves_nothing(day_before_last):
    """An id reused on another date passes the model's deduplication (it compares the dates the new rows cover):
    the unique test must catch it although the other row is history."""
    settings = day_before_last
    before = recorded(settings)
    with connect(settings) as con:
        con.execute(
            "insert into raw.events select * replace ('reused-batch' as batch_id, now() as ingested_at, "
            "event_ts + interval 2 day as event_ts) from raw.events "
            "where event_id = (select min(event_id) from intermediate.int_events_deduped)"
        )
    with pytest.raises(TransformError, match="unique_int_events_deduped_event_id"):
        build_warehouse(settings)
    assert recorded(settings) == before


def test_a_selected_build_and_a_full_refresh(day_before_last):
    """A build of part of the project tests part of it: it leaves the record. A full refresh checks every row."""
    settings = day_before_last
    before = recorded(settings)
    with connect(settings) as con:
        con.execute("update raw.events set ingested_at = now() where event_id = (select min(event_id) from raw.events)")
    build_warehouse(settings, select="int_events_deduped")
    assert recorded(settings) == before
    build_warehouse(settings, full_refresh=True)
    assert "ingested_at >" not in compiled_test(settings, "unique_int_events_deduped_event_id")
    assert recorded(settings) == [(data_tests_key(settings), newest_ingested(settings))] != before


def test_a_model_naming_an_unknown_scope_fails_the_build_naming_the_model_and_the_valid_ones(
    built, tmp_path, monkeypatch
):
    import shutil

    project = tmp_path / "dbt_project"
    shutil.copytree(built.dbt_project_dir, project, ignore=shutil.ignore_patterns("target", "logs"))
    models = project / "models" / "intermediate" / "_intermediate.yml"
    models.write_text(
        models.read_text().replace("meta: {tests_scope: ingested_at}  #", "meta: {tests_scope: today}  #")
    )
    monkeypatch.setattr(type(built), "dbt_project_dir", property(lambda self: project))
    settings = copy_home(built, tmp_path / "home")
    with pytest.raises(
        TransformError, match="meta.tests_scope of int_events_deduped is today; valid: ingested_at, event_id"
    ):
        build_warehouse(settings)


def test_a_day_ingested_again_is_tested_again(day_before_last):
    """A backfill replaces a day's rows with new ingestion times: the next build's tests cover exactly that day."""
    settings = day_before_last
    start, _ = whole_log(settings)
    ingest_interval(settings, start, start + timedelta(days=1))  # the first day again: it replaces itself
    with connect(settings) as con:
        (since,) = con.execute(f"select passed_through from {RECORD}").fetchone()
        replaced = con.execute("select count(*) from raw.events where ingested_at > ?", [since]).fetchone()[0]
        assert (
            replaced
            == con.execute("select count(*) from raw.events where landing_date = ?", [start.date()]).fetchone()[0]
            > 0
        )
    build_warehouse(settings)
    scoped = compiled_test(settings, "not_null_int_events_deduped_batch_id")
    condition = scoped[scoped.index("where (") + len("where ") : scoped.index(") dbt_subquery")]
    with connect(settings) as con:
        tested = con.execute(f"select count(*) from intermediate.int_events_deduped where {condition}").fetchone()[0]
        day = con.execute("select count(*) from intermediate.int_events_deduped where landing_date = ?", [start.date()])
        assert tested == day.fetchone()[0] > 0
