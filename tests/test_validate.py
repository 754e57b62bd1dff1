from datetime import UTC, datetime, timedelta

import pytest

from pipelines.validate import ValidationFailed, validate_raw_batch
from pipelines.warehouse import connect
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
    assert report.passed and report.rows > 0
    assert report.data_docs.exists()
    assert "raw_events" in report.data_docs.read_text()


def test_a_critical_failure_stops_with_suite_expectation_and_batch_named(built, tmp_path):
    settings = copy_home(built, tmp_path / "home")
    start, end = first_day(settings)
    corrupt_three_rows(settings, start, "event_type = 'hover'")
    with pytest.raises(ValidationFailed) as failure:
        validate_raw_batch(settings, start, end)
    message = str(failure.value)
    assert "suite 'raw_events'" in message
    assert "expect_column_values_to_be_in_set(event_type)" in message
    assert f"raw_events:{start:%Y-%m-%d}" in message


def test_a_warning_is_reported_and_the_run_goes_on(built, tmp_path):
    settings = copy_home(built, tmp_path / "home")
    start, end = first_day(settings)
    corrupt_three_rows(settings, start, "value = -1")
    report = validate_raw_batch(settings, start, end)
    assert report.passed
    assert report.failed_warning == ["expect_column_values_to_be_between(value)"]


def test_validation_never_writes_into_the_repository(built, tmp_path):
    settings = copy_home(built, tmp_path / "home")
    validate_raw_batch(settings, *first_day(settings))
    assert not (settings.expectations_dir / "uncommitted").exists()
