"""Serving's failure log read back by the pipeline: counts by reason per day and week, kept past rotation."""

from datetime import UTC, datetime

from pipelines.operations.failures import (
    daily_counts,
    failure_log_dir,
    read_failures,
    record_failure_counts,
    weekly_failures,
)
from pipelines.warehouse.connection import connect
from serving.failures import DIRECTORY, FILE_NAME, Reason, record_line
from tests.conftest import make_settings

RECS = "/v1/users/{user_id}/recommendations"


def at(day: str, hour: int = 12) -> float:
    return datetime.fromisoformat(f"{day}T{hour:02d}:00:00+00:00").timestamp()


def write_log(path, entries) -> None:
    """Lines as serving's writer formats them (serving.failures.record_line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(record_line(*entry) for entry in entries))


def test_the_log_is_read_from_the_serving_home_across_rotated_files(tmp_path):
    settings = make_settings(tmp_path / "home")
    directory = failure_log_dir(settings)
    assert directory == settings.home / DIRECTORY
    write_log(directory / f"{FILE_NAME}.1", [(at("2026-03-02"), RECS, 200, Reason.UNKNOWN_USER, "v1", "u1")])
    write_log(directory / FILE_NAME, [(at("2026-03-03"), RECS, 422, Reason.INVALID_K, "v1", "u2")])
    with (directory / FILE_NAME).open("ab") as log:
        log.write(b'{"time": "2026-03-03T1')  # a line cut short by a crash
    read = read_failures(directory)
    assert read.unreadable_lines == 1
    assert read.records["user_id"].tolist() == ["u1", "u2"]  # oldest file first
    assert read.records["time"].iloc[0] == datetime(2026, 3, 2, 12, tzinfo=UTC)


def test_failed_answers_are_counted_by_reason_per_week(tmp_path):
    settings = make_settings(tmp_path / "home")
    write_log(
        failure_log_dir(settings) / FILE_NAME,
        [
            (at("2026-03-02"), RECS, 200, Reason.UNKNOWN_USER, "v1", "u1"),  # Monday of week 2026-03-02
            (at("2026-03-08", 23), RECS, 200, Reason.UNKNOWN_USER, "v1", "u2"),  # its Sunday
            (at("2026-03-04"), "/v1/items/{item_id}/similar", 404, Reason.UNKNOWN_ITEM, "v1", None, "i9"),
            (at("2026-03-09"), RECS, 422, Reason.INVALID_K, "v1", "u3"),  # the next week
            (at("2026-03-10"), RECS, 503, Reason.NO_PUBLICATION, None),
        ],
    )
    weekly = weekly_failures(settings)
    assert weekly.to_dict(orient="index") == {
        "2026-03-02": {"unknown_user": 2, "unknown_item": 1, "invalid_k": 0, "no_publication": 0},
        "2026-03-09": {"unknown_user": 0, "unknown_item": 0, "invalid_k": 1, "no_publication": 1},
    }
    assert list(weekly.columns) == ["unknown_user", "unknown_item", "invalid_k", "no_publication"]  # Reason's order


def test_stored_counts_outlive_the_logs_rotation_and_are_never_lowered(tmp_path):
    settings = make_settings(tmp_path / "home")
    directory = failure_log_dir(settings)
    old = [(at("2026-03-02", h), RECS, 200, Reason.UNKNOWN_USER, "v1", f"u{h}") for h in range(5)]
    new = [(at("2026-03-10"), RECS, 422, Reason.INVALID_K, "v1", "u9")]
    write_log(directory / f"{FILE_NAME}.1", old[:3])
    write_log(directory / FILE_NAME, old[3:] + new)
    record_failure_counts(settings)
    record_failure_counts(settings)  # again: a retried health check stores the same counts
    (directory / f"{FILE_NAME}.1").unlink()  # rotated out: the log now holds 2 of that day's 5
    stored = record_failure_counts(settings)
    assert stored.set_index(["reason"])["answers"].to_dict() == {"unknown_user": 5, "invalid_k": 1}
    with connect(settings) as con:
        assert con.execute("select sum(answers) from monitoring.failed_requests").fetchone()[0] == 6
        weekly = weekly_failures(settings, con)
    assert weekly.loc["2026-03-02", "unknown_user"] == 5 and weekly.loc["2026-03-09", "invalid_k"] == 1


def test_no_log_counts_nothing(tmp_path):
    settings = make_settings(tmp_path / "home")
    assert read_failures(failure_log_dir(settings)).records.empty
    assert daily_counts(read_failures(failure_log_dir(settings)).records).empty
    assert weekly_failures(settings).empty and record_failure_counts(settings).empty
