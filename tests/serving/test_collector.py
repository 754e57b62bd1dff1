"""POST /v1/events: each event judged by the event contract, acknowledged only once stored durably."""

from __future__ import annotations

import asyncio
import fcntl
import os
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from fastapi.testclient import TestClient

from serving.collector.segments import (
    OPEN_SUFFIX,
    TORN_DIR,
    SegmentWriter,
    closed_segments,
    open_segments,
    recover,
)
from serving.config import InvalidSettings, ServingSettings, load_settings
from serving.events import ROW_REASONS
from serving.main import create_app
from tests.services import redis_db  # noqa: F401  (a fixture)

KEY = "test-app-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
NDJSON = {**AUTH, "content-type": "application/x-ndjson"}


def now_stamp(**delta) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat().replace("+00:00", "Z")


def event(n: int, **fields) -> dict:
    return {
        "event_id": f"e{n}", "user_id": f"u{n}", "item_id": "i1", "event_type": "click", "event_ts": now_stamp(),
        **fields,
    }  # fmt: skip


@contextmanager
def collector(tmp_path, **settings):
    app = create_app(ServingSettings(home=tmp_path, collector_app_key=KEY, **settings))
    with TestClient(app) as client:
        yield client


def stored(tmp_path) -> list[dict]:
    """Every event in the closed segments (the client has stopped: every segment is closed)."""
    root = tmp_path / "landing" / "stream"
    assert open_segments(root) == []
    return [orjson.loads(line) for path in closed_segments(root) for line in path.read_bytes().splitlines()]


def test_one_event_is_acknowledged_and_stored_in_a_closed_segment(tmp_path):
    with collector(tmp_path) as client:
        answer = client.post("/v1/events", json=event(1), headers=AUTH)
    assert (answer.status_code, answer.json()) == (200, {"accepted": 1, "rejected": 0, "errors": []})
    assert stored(tmp_path) == [event(1) | {"event_ts": stored(tmp_path)[0]["event_ts"]}]
    (segment,) = closed_segments(tmp_path / "landing" / "stream")
    assert segment.parent.name == f"date={datetime.now(UTC):%Y-%m-%d}" and segment.name.endswith(".jsonl")


def test_a_json_array_is_a_batch(tmp_path):
    batch = [event(n) for n in range(50)]
    with collector(tmp_path) as client:
        answer = client.post("/v1/events", json=batch, headers=AUTH)
    assert answer.json()["accepted"] == 50
    assert [e["event_id"] for e in stored(tmp_path)] == [e["event_id"] for e in batch]


def test_ndjson_is_one_event_per_line_and_blank_lines_are_no_events(tmp_path):
    body = b"\n".join(orjson.dumps(event(n)) for n in range(3)) + b"\r\n\n  \n" + orjson.dumps(event(3)) + b"\n"
    with collector(tmp_path) as client:
        answer = client.post("/v1/events", content=body, headers=NDJSON)
    assert (answer.status_code, answer.json()["accepted"]) == (200, 4)
    assert [e["event_id"] for e in stored(tmp_path)] == ["e0", "e1", "e2", "e3"]


# Built when a test runs (a timestamp made at import could be in the past by then).
BAD_EVENTS = {
    "schema_mismatch": lambda: event(1, user_id=True),
    "missing_event_id": lambda: event(1, event_id=" "),
    "missing_user_id": lambda: event(1, user_id=None),
    "missing_item_id": lambda: {k: v for k, v in event(1).items() if k != "item_id"},
    "id_too_long": lambda: event(1, item_id="i" * 129),
    "id_bad_characters": lambda: event(1, user_id="u 1"),
    "unknown_event_type": lambda: event(1, event_type="like"),
    "bad_timestamp": lambda: event(1, event_ts="2026-01-05T10:00"),
    "future_timestamp": lambda: event(1, event_ts=now_stamp(seconds=301)),
    "late_beyond_window": lambda: event(1, event_ts=now_stamp(days=-4)),
}


@pytest.mark.parametrize("reason", BAD_EVENTS)
def test_each_bad_event_gets_422_naming_its_reason_and_nothing_is_stored(tmp_path, reason):
    with collector(tmp_path) as client:
        answer = client.post("/v1/events", json=[BAD_EVENTS[reason]()], headers=AUTH)
    assert answer.status_code == 422
    (error,) = answer.json()["errors"]
    assert (error["index"], error["reason"]) == (0, reason) and error["detail"]
    assert stored(tmp_path) == []


def test_every_row_rule_is_exercised_here_or_in_the_ndjson_tests():
    assert set(ROW_REASONS) - set(BAD_EVENTS) == {"non_finite_value"}  # only reachable from JSON as 1e400


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"{not json", "malformed_json"),
        (b'{"event_id": "e\xff"}', "invalid_utf8"),
        (b'"a string"', "schema_mismatch"),
        (orjson.dumps(event(9))[:-1] + b', "value": 1e400}', "non_finite_value"),
        (orjson.dumps(event(9, context={"pad": "x" * 2000})), "line_too_long"),
    ],
)
def test_an_ndjson_line_that_is_no_event_is_refused_with_its_line_number(tmp_path, line, reason):
    body = orjson.dumps(event(1)) + b"\n\n" + line + b"\n"
    with collector(tmp_path, ingest_max_line_bytes=1024) as client:
        answer = client.post("/v1/events", content=body, headers=NDJSON)
    assert answer.status_code == 207
    assert answer.json()["errors"] == [
        {"index": 1, "line": 3, "reason": reason, "detail": answer.json()["errors"][0]["detail"]}
    ]
    assert [e["event_id"] for e in stored(tmp_path)] == ["e1"]


def test_a_partly_bad_batch_stores_the_good_events_and_lists_every_bad_one(tmp_path):
    batch = [event(0), event(1, user_id=""), event(2), "oops", event(4, event_type="like"), event(5)]
    with collector(tmp_path) as client:
        answer = client.post("/v1/events", json=batch, headers=AUTH)
        metrics = client.get("/metrics").text
    body = answer.json()
    assert answer.status_code == 207 and (body["accepted"], body["rejected"]) == (3, 3)
    assert [(e["index"], e["reason"]) for e in body["errors"]] == [
        (1, "missing_user_id"), (3, "schema_mismatch"), (4, "unknown_event_type"),
    ]  # fmt: skip
    assert [e["event_id"] for e in stored(tmp_path)] == ["e0", "e2", "e5"]
    assert 'recforge_collector_events_total{outcome="accepted"} 3.0' in metrics
    assert 'recforge_collector_events_total{outcome="missing_user_id"} 1.0' in metrics


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-key-0123456789"}, {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"}],
    ids=["none", "wrong", "no-scheme", "basic"],
)
def test_without_the_app_key_the_answer_is_401_and_nothing_is_stored(tmp_path, headers):
    with collector(tmp_path) as client:
        answer = client.post("/v1/events", json=event(1), headers=headers)
    assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
    assert stored(tmp_path) == []


def test_with_no_app_key_configured_the_collector_is_off(tmp_path):
    with TestClient(create_app(ServingSettings(home=tmp_path))) as client:
        answer = client.post("/v1/events", json=event(1), headers=AUTH)
    assert answer.status_code == 503 and "RECFORGE_COLLECTOR_APP_KEY" in answer.json()["detail"]
    assert not (tmp_path / "landing").exists()


@pytest.mark.parametrize(
    ("body", "content_type", "status", "words"),
    [
        (b"{nope", "application/json", 400, "not JSON"),
        (b"[]", "application/json", 400, "no events"),
        (b"42", "application/json", 400, "one event (an object) or a batch"),
        (b"\n\n", "application/x-ndjson", 400, "no events"),
        (b"{}", "text/plain", 415, "application/x-ndjson"),
        (b"{}", None, 415, "missing"),
    ],
)
def test_a_body_without_events_is_refused_whole(tmp_path, body, content_type, status, words):
    headers = {**AUTH, **({"content-type": content_type} if content_type else {})}
    with collector(tmp_path) as client:
        answer = client.post("/v1/events", content=body, headers=headers)
    assert answer.status_code == status and words in answer.json()["detail"]


def test_the_app_key_may_come_from_a_file_and_is_never_shown_in_an_error(tmp_path, monkeypatch):
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    monkeypatch.setenv("RECFORGE_COLLECTOR_APP_KEY_FILE", str(key_file))
    assert load_settings(ServingSettings).collector_app_key.get_secret_value() == KEY
    monkeypatch.setenv("RECFORGE_COLLECTOR_APP_KEY", KEY)
    with pytest.raises(InvalidSettings, match="both set"):
        load_settings(ServingSettings)
    monkeypatch.delenv("RECFORGE_COLLECTOR_APP_KEY_FILE")
    monkeypatch.setenv("RECFORGE_COLLECTOR_APP_KEY", "short-secret")
    with pytest.raises(InvalidSettings) as refused:
        load_settings(ServingSettings)
    assert "RECFORGE_COLLECTOR_APP_KEY=<hidden>" in str(refused.value) and "short-secret" not in str(refused.value)


# --- segments: roll, close, recover


def run(coroutine):
    return asyncio.run(coroutine)


def test_a_segment_is_closed_by_rename_once_it_holds_max_bytes(tmp_path):
    async def write():
        writer = SegmentWriter(tmp_path, max_bytes=4096, max_seconds=3600)
        await writer.start()
        for n in range(100):
            await writer.append(datetime.now(UTC).date(), [orjson.dumps(event(n))])
        still_open = open_segments(tmp_path)
        await writer.stop()
        return still_open

    still_open = run(write())
    closed = closed_segments(tmp_path)
    assert len(closed) > 1 and len(still_open) == 1 and still_open[0].name.endswith(OPEN_SUFFIX)
    assert all(path.stat().st_size <= 4096 + 200 for path in closed)
    ids = [orjson.loads(line)["event_id"] for path in closed for line in path.read_bytes().splitlines()]
    assert ids == [f"e{n}" for n in range(100)]  # in order, none twice, none lost


def test_a_segment_is_closed_after_max_seconds_even_without_new_events(tmp_path):
    async def write():
        writer = SegmentWriter(tmp_path, max_seconds=0.5)
        await writer.start()
        await writer.append(datetime.now(UTC).date(), [orjson.dumps(event(1))])
        assert len(open_segments(tmp_path)) == 1
        await asyncio.sleep(1.5)
        closed = closed_segments(tmp_path)
        await writer.stop()
        return closed

    assert len(run(write())) == 1 and open_segments(tmp_path) == []


def test_concurrent_requests_share_one_fsync(tmp_path):
    commits = []

    async def write():
        writer = SegmentWriter(tmp_path, on_commit=lambda events, seconds: commits.append(events))
        await writer.start()
        day = datetime.now(UTC).date()
        await asyncio.gather(*(writer.append(day, [orjson.dumps(event(n))] * 10) for n in range(200)))
        await writer.stop()

    run(write())
    assert sum(commits) == 2000 and len(commits) < 200  # groups, not one fsync per request


def test_recovery_moves_a_torn_last_line_aside_and_closes_the_rest(tmp_path):
    day = tmp_path / "date=2026-01-05"
    day.mkdir()
    whole = orjson.dumps(event(1)) + b"\n" + orjson.dumps(event(2)) + b"\n"
    (day / f"a{OPEN_SUFFIX}").write_bytes(whole + b'{"event_id": "e3", "us')
    (day / f"empty{OPEN_SUFFIX}").write_bytes(b'{"event_id": "e4"')  # nothing whole: nothing to close
    result = recover(tmp_path)
    assert (result.segments, result.lines, result.torn_bytes) == (2, 2, 22 + 17)
    assert closed_segments(tmp_path) == [day / "a.jsonl"] and (day / "a.jsonl").read_bytes() == whole
    assert (tmp_path / TORN_DIR / day.name / "a.torn").read_bytes() == b'{"event_id": "e3", "us'
    assert open_segments(tmp_path) == []


def test_recovery_leaves_a_segment_a_live_writer_holds_alone(tmp_path):
    day = tmp_path / "date=2026-01-05"
    day.mkdir()
    path = day / f"live{OPEN_SUFFIX}"
    path.write_bytes(b'{"event_id": "e1"')
    with open(path, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        pid = os.fork()
        if pid == 0:  # another process, as another worker's recovery would be
            os._exit(0 if recover(tmp_path).segments == 0 else 1)
        assert os.waitpid(pid, 0)[1] == 0
    assert path.exists()


# --- the scaled configuration: a Redis Stream with a consumer group


def test_events_are_appended_to_a_redis_stream_with_its_consumer_group(tmp_path, redis_db):  # noqa: F811
    import redis

    with collector(tmp_path, collector_backend="redis", collector_redis_url=redis_db) as client:
        answer = client.post("/v1/events", json=[event(1), event(2, user_id=""), event(3)], headers=AUTH)
    assert (answer.status_code, answer.json()["accepted"]) == (207, 2)
    r = redis.Redis.from_url(redis_db)
    entries = r.xrange("recforge:events")
    assert [orjson.loads(fields[b"event"])["event_id"] for _, fields in entries] == ["e1", "e3"]
    assert {fields[b"day"].decode() for _, fields in entries} == {f"{datetime.now(UTC):%Y-%m-%d}"}
    (group,) = r.xinfo_groups("recforge:events")
    assert group["name"] == b"recforge-ingest" and group["lag"] == 2  # both wait for the consumer
    assert not (tmp_path / "landing").exists()


def test_with_redis_unreachable_events_get_503_and_are_not_acknowledged(tmp_path):
    with collector(tmp_path, collector_backend="redis", collector_redis_url="redis://127.0.0.1:1/0") as client:
        answer = client.post("/v1/events", json=event(1), headers=AUTH)
    assert answer.status_code == 503 and "send it again" in answer.json()["detail"]
