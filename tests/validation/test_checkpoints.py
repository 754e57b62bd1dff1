from datetime import UTC, datetime, timedelta

import pytest

from pipelines.validation.checkpoints import ValidationFailed, validate_marts, validate_raw_batch
from pipelines.warehouse.connection import connect
from pipelines.warehouse.transform import build_warehouse
from tests.conftest import copy_home


def first_day(settings) -> tuple[datetime, datetime]:
    start = datetime.combine(settings.sim_start_date, datetime.min.time(), tzinfo=UTC)
    return start, start + timedelta(days=1)


def corrupt_three_rows(settings, start: datetime, assignment: str) -> None:
    with connect(settings) as con:
        con.execute(
            f"update raw.events set {assignment} where event_id in "
            "(select event_id from raw.events where landing_date = ? limit 3)",
            [start.date()],
        )


def test_a_clean_batch_passes_and_writes_data_docs(built, tmp_path):
    settings = copy_home(built, tmp_path / "home")
    report = validate_raw_batch(settings, *first_day(settings))
    assert report.passed and report.rows["raw_events"] > 0
    assert report.data_docs.exists()
    assert set(report.pages) == {"raw_events", "raw_batch_quality"}
    assert all(page.exists() for page in report.pages.values())


def test_a_critical_failure_stops_with_suite_expectation_and_batch_named(built, tmp_path):
    settings = copy_home(built, tmp_path / "home")
    start, end = first_day(settings)
    corrupt_three_rows(settings, start, "event_type = 'hover'")
    with pytest.raises(ValidationFailed) as failure:
        validate_raw_batch(settings, start, end)
    message = str(failure.value)
    assert "checkpoint 'raw_batch'" in message
    assert "raw_events.expect_column_values_to_be_in_set(event_type)" in message
    assert f"raw_batch:{start:%Y-%m-%d}" in message


def test_a_warning_is_reported_and_the_run_goes_on(built, tmp_path):
    settings = copy_home(built, tmp_path / "home")
    start, end = first_day(settings)
    corrupt_three_rows(settings, start, "value = -1")
    report = validate_raw_batch(settings, start, end)
    assert report.passed
    assert "raw_events.expect_column_values_to_be_between(value)" in report.failed_warning


def test_validation_never_writes_into_the_repository(built, tmp_path):
    settings = copy_home(built, tmp_path / "home")
    validate_raw_batch(settings, *first_day(settings))
    assert not (settings.expectations_dir / "uncommitted").exists()


def test_a_batch_full_of_duplicates_is_a_critical_failure(built, tmp_path):
    settings = copy_home(built, tmp_path / "home", max_duplicate_share=0.0001)
    with pytest.raises(
        ValidationFailed, match=r"raw_batch_quality.expect_column_values_to_be_between\(duplicate_share\)"
    ):
        validate_raw_batch(settings, *first_day(settings))


def test_marts_pass_and_the_next_run_is_held_to_the_row_count_band(built, tmp_path):
    settings = copy_home(built, tmp_path / "home")
    first = validate_marts(settings)
    assert first.passed and set(first.rows) == {"marts_interactions", "marts_splits", "item_coverage"}
    with connect(settings) as con:  # GX saw one row per user; the report counts the mart's rows
        assert first.rows["marts_interactions"] == con.execute("select count(*) from marts.interactions").fetchone()[0]
        assert con.execute(
            "select rows_validated from monitoring.validation_runs where suite = 'marts.marts_interactions'"
        ).fetchall() == [(first.rows["marts_interactions"],)]
    with connect(settings) as con:
        # A third of the mart vanishes (marts.interactions is a view, one row per row of the pairs' table).
        con.execute("delete from intermediate.int_interaction_cells where hash(user_id) % 3 = 0")
    tight = copy_home(settings, tmp_path / "tight", mart_row_count_band=0.1)
    with pytest.raises(ValidationFailed, match=r"marts_interactions.expect_column_sum_to_be_between\(n_rows\)"):
        validate_marts(tight)


@pytest.mark.parametrize(
    ("breakage", "failed"),
    [
        (  # a user-item pair twice: the mart's grain broken (marts.interactions is a view over the pairs' table)
            "insert into intermediate.int_interaction_cells "
            "select * from intermediate.int_interaction_cells order by user_id, item_id limit 1",
            r"marts_interactions.expect_column_values_to_be_in_set\(repeated_items\)",
        ),
        (  # a weight that is no weight
            "update intermediate.int_interaction_cells set weight_at_reference = 0 "
            "where user_id = (select min(user_id) from marts.interactions)",
            r"marts_interactions.expect_column_values_to_be_between\(min_weight\)",
        ),
        (  # an interaction standing on no event
            "update intermediate.int_interaction_cells set n_events = 0 "
            "where user_id = (select max(user_id) from marts.interactions)",
            r"marts_interactions.expect_column_values_to_be_between\(min_n_events\)",
        ),
        (  # a split missing
            "delete from intermediate.int_interactions_split_recent where split = 'valid'",
            r"marts_splits.expect_column_distinct_values_to_equal_set\(split\)",
        ),
    ],
    ids=["duplicate_user_item_pair", "zero_weight", "no_event", "missing_split"],
)
def test_a_broken_mart_is_a_critical_failure_naming_the_expectation(built, tmp_path, breakage, failed):
    settings = copy_home(built, tmp_path / "home")
    with connect(settings) as con:
        con.execute(breakage)
    with pytest.raises(ValidationFailed, match=failed):
        validate_marts(settings)


def test_missing_item_features_are_a_warning(built, tmp_path):
    settings = copy_home(built, tmp_path / "home")
    with connect(settings) as con:
        con.execute("update raw.items set category = null where hash(item_id) % 4 = 0")
    build_warehouse(settings)  # the checkpoint reads the marts, which carry the catalog's gaps
    report = validate_marts(settings)
    assert report.passed
    assert "item_coverage.expect_column_values_to_not_be_null(category)" in report.failed_warning


def test_every_outcome_is_recorded_for_the_reports(built, tmp_path):
    settings = copy_home(built, tmp_path / "home")
    validate_marts(settings)
    with connect(settings) as con:
        suites = {row[0] for row in con.execute("select suite from monitoring.validation_runs").fetchall()}
    assert {"marts.marts_interactions", "marts.marts_splits", "marts.item_coverage"} <= suites
    index = (settings.reports_dir / "index.html").read_text()
    assert "marts_interactions" in index


def test_data_docs_templates_are_compiled_once_per_home_not_per_checkpoint(built, tmp_path, monkeypatch):
    """GX renders each page with a new Jinja environment; the home's bytecode cache spares the recompiling."""
    import jinja2

    settings = copy_home(built, tmp_path / "home")
    start, end = first_day(settings)
    compiles = []
    original = jinja2.Environment.compile
    monkeypatch.setattr(jinja2.Environment, "compile", lambda *a, **k: compiles.append(1) or original(*a, **k))
    validate_raw_batch(settings, start, end)
    first = len(compiles)
    assert first > 0 and any((settings.home / "gx" / "template_cache").iterdir())
    compiles.clear()
    report = validate_raw_batch(settings, end, end + timedelta(days=1))
    assert compiles == [] and all(page.exists() for page in report.pages.values())


def batches_held() -> int:
    """Frames GX's pandas engines still hold (PandasBatchData objects alive after a collection)."""
    import gc

    gc.collect()
    return sum(type(held).__name__ == "PandasBatchData" for held in gc.get_objects())


def test_a_process_running_checkpoint_after_checkpoint_keeps_none_of_their_frames(built, tmp_path):
    """GX's pandas engine caches every batch it is handed and GX keeps its contexts alive: before
    `release_batches` a process that validated a day at a time held every day's events (1.1 GB a day
    at a million users, until the scale benchmark's ingest ran out of memory)."""
    settings = copy_home(built, tmp_path / "home")
    start, _ = first_day(settings)
    before = batches_held()
    for day in range(3):
        validate_raw_batch(settings, start + timedelta(days=day), start + timedelta(days=day + 1))
    corrupt_three_rows(settings, start, "event_type = 'hover'")
    with pytest.raises(ValidationFailed):  # a failed checkpoint lets go of its frames too
        validate_raw_batch(settings, start, start + timedelta(days=1))
    assert batches_held() == before


def test_a_checkpoint_that_breaks_mid_run_still_lets_go_of_its_frames(built, tmp_path, monkeypatch):
    from great_expectations.core.validation_definition import ValidationDefinition

    settings = copy_home(built, tmp_path / "home")
    validate = ValidationDefinition.run

    def run_then_break(self, *args, **kwargs):
        validate(self, *args, **kwargs)
        raise RuntimeError("the validation store is gone")

    monkeypatch.setattr(ValidationDefinition, "run", run_then_break)
    before = batches_held()
    with pytest.raises(RuntimeError, match="validation store is gone"):
        validate_raw_batch(settings, *first_day(settings))
    assert batches_held() == before
