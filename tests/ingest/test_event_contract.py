"""One event contract: the collector's Python rules (serving/events.py) and ingest's SQL give the same verdicts.

Each event below goes through the real ingest (JSONL adapter + classify_events.sql on a DuckDB
warehouse) and through ``event_reason``; for every one the reason must be the same, except where
the collector is documented as stricter (it may refuse what ingest accepts, never the reverse).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from pipelines.contract import EVENT_TYPES as PIPELINE_EVENT_TYPES
from pipelines.ingest.batch import CLASSIFY_SQL, BatchWindow, ingest_batch
from pipelines.ingest.sources import REQUIRED_COLUMNS, get_source
from pipelines.settings import Settings
from pipelines.warehouse.connection import connect
from serving.config import ServingSettings
from serving.events import EVENT_TYPES, READ_REASONS, REQUIRED_FIELDS, ROW_REASONS, EventWindow, event_reason
from serving.ids import MAX_ID_LENGTH

NOW = datetime.now(UTC).replace(microsecond=0)
STAMP = NOW.isoformat().replace("+00:00", "Z")


def event(n: int, **fields) -> dict:
    return {
        "event_id": f"e{n}",
        "user_id": f"u{n}",
        "item_id": "i1",
        "event_type": "click",
        "event_ts": STAMP,
        **fields,
    }


def without(n: int, field: str) -> dict:
    return {k: v for k, v in event(n).items() if k != field}


# (event, the reason both give) — None: accepted by both.
AGREED = [
    (event(1), None),
    (event(2, event_ts=NOW.strftime("%Y-%m-%d %H:%M:%S")), None),  # no offset: UTC
    (event(3, event_ts=(NOW + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.123456789+02:00")), None),
    (event(4, user_id=12345, item_id=-7, event_id=99), None),  # integer ids are their decimal text
    (event(5, value=4.5, session_id="s1", context={"device": "tv"}, extra="kept"), None),
    (event(6, value=3), None),
    ("just a string", "schema_mismatch"),
    ([1, 2], "schema_mismatch"),
    (event(7, user_id=True), "schema_mismatch"),
    (event(8, item_id={"id": 1}), "schema_mismatch"),
    (event(9, event_type=1), "schema_mismatch"),
    (event(10, event_ts=1767225600), "schema_mismatch"),
    (event(11, context="device=tv"), "schema_mismatch"),
    (event(12, value=False), "schema_mismatch"),
    (without(13, "event_id"), "missing_event_id"),
    (event(14, event_id="   "), "missing_event_id"),
    (without(15, "user_id"), "missing_user_id"),
    (event(16, user_id=""), "missing_user_id"),
    (event(17, item_id=None), "missing_item_id"),
    (event(18, user_id="u" * (MAX_ID_LENGTH + 1)), "id_too_long"),
    (event(19, item_id="bad item"), "id_bad_characters"),
    (event(20, user_id="ünï"), "id_bad_characters"),
    (event(21, event_type="like"), "unknown_event_type"),
    (without(22, "event_type"), "unknown_event_type"),
    (without(23, "event_ts"), "bad_timestamp"),
    (event(24, event_ts="yesterday at noon"), "bad_timestamp"),
    (event(25, event_ts="2026-02-30T10:00:00Z"), "bad_timestamp"),
    (event(26, event_ts="2099-01-01T00:00:00Z"), "future_timestamp"),
    (event(27, event_ts=(NOW - timedelta(days=30)).isoformat()), "late_beyond_window"),
    (event(28, user_id="", event_type="like"), "missing_user_id"),  # the first failing rule wins
    (event(29, event_type="like", event_ts="nonsense"), "unknown_event_type"),
]
# Forms ingest reads but the collector refuses (serving/events.py, "stricter in two places").
STRICTER = [
    (event(40, event_ts=NOW.strftime("%Y-%m-%d %H:%M:%S UTC")), "bad_timestamp"),
    (event(41, value="4.5"), "schema_mismatch"),
    (event(42, user_id=1.5), "schema_mismatch"),
    (event(43, session_id={"id": 1}), "schema_mismatch"),
]


def ingest_verdicts(tmp_path, events: list) -> list[str | None]:
    """The reason ingest gives each event (None: accepted), through the real adapter and rules."""
    settings = Settings(home=tmp_path / "home")
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    midnight = datetime(NOW.year, NOW.month, NOW.day, tzinfo=UTC)
    window = BatchWindow(
        interval_start=midnight,
        interval_end=midnight + timedelta(days=1),
        landing_date=midnight.date(),
        latest_allowed=midnight + timedelta(days=1, seconds=settings.future_tolerance_seconds),
        earliest_allowed=midnight - timedelta(days=settings.late_arrival_days),
    )
    with connect(settings) as warehouse:
        ingest_batch(
            warehouse, get_source("recforge"), path, "events.jsonl", "contract", window,
            settings.bot_max_events_per_minute, settings.ingest_max_line_bytes,
        )  # fmt: skip
        reasons = dict(warehouse.execute("select line_number, reason from quarantine.events").fetchall())
    return [reasons.get(n) for n in range(1, len(events) + 1)]


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory):
    events = [e for e, _ in AGREED + STRICTER]
    in_sql = ingest_verdicts(tmp_path_factory.mktemp("contract"), events)
    defaults = ServingSettings()
    window = EventWindow.for_arrival(datetime.now(UTC), defaults.late_arrival_days, defaults.future_tolerance_seconds)
    in_python = [event_reason(e, window) for e in events]
    return in_sql, in_python


def test_ingest_and_the_collector_give_every_event_the_same_reason(verdicts):
    in_sql, in_python = verdicts
    n = len(AGREED)
    expected = [reason for _, reason in AGREED]
    assert in_sql[:n] == expected
    assert in_python[:n] == expected


def test_the_collector_is_stricter_only_where_documented_and_never_looser(verdicts):
    in_sql, in_python = verdicts
    n = len(AGREED)
    assert in_sql[n:] == [None] * len(STRICTER)  # ingest accepts these forms...
    assert in_python[n:] == [reason for _, reason in STRICTER]  # ...the collector names why it does not


def test_every_reason_the_collector_can_give_is_one_ingest_names():
    sql = CLASSIFY_SQL.read_text()
    for reason in ROW_REASONS:
        assert f"'{reason}'" in sql, reason
    row_rules = re.findall(r"then '(\w+)'", sql.split("end as row_reason")[0])
    assert tuple(row_rules) == ROW_REASONS  # the same rules in the same order
    assert set(READ_REASONS) <= {"line_too_long", "invalid_utf8", "malformed_json", "schema_mismatch"}


def test_the_pipeline_and_the_adapter_import_the_contract_instead_of_spelling_it():
    assert PIPELINE_EVENT_TYPES is EVENT_TYPES
    assert REQUIRED_COLUMNS is REQUIRED_FIELDS
    for name in ("late_arrival_days", "future_tolerance_seconds", "ingest_max_line_bytes"):
        assert Settings.model_fields[name].metadata == ServingSettings.model_fields[name].metadata, name
        assert Settings.model_fields[name].default == ServingSettings.model_fields[name].default, name
