"""Micro-batches: the collector's closed segments go through the daily ingest's rules, once each,
and a segment ingested again replaces itself."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from fastapi.testclient import TestClient

from pipelines.ingest import ingest_interval, ingest_stream
from pipelines.ingest.stream import stream_batch_id, stream_dir
from pipelines.warehouse.connection import connect
from serving.collector.segments import SegmentWriter, closed_segments
from serving.config import ServingSettings
from serving.main import create_app
from tests.conftest import copy_home, make_settings
from tests.ingest.test_ingest import DAY, event, write_day
from tests.services import redis_db  # noqa: F401  (a fixture)

KEY = "stream-ingest-key-0123456789"


def now_event(n: int, **fields) -> dict:
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return {"event_id": f"s{n}", "user_id": f"u{n % 7}", "item_id": f"i{n % 5}", "event_type": "view",
            "event_ts": stamp, **fields}  # fmt: skip


def write_segment(settings, day, lines: list[bytes]) -> None:
    """A closed segment written by the real writer, for `day`."""

    async def write():
        writer = SegmentWriter(stream_dir(settings))
        await writer.start()
        await writer.append(day, lines)
        await writer.stop()

    asyncio.run(write())


def table(settings, sql: str) -> list[tuple]:
    with connect(settings) as warehouse:
        return warehouse.execute(sql).fetchall()


@pytest.fixture
def home(tmp_path):
    return make_settings(tmp_path / "home")


def test_events_sent_to_the_collector_reach_raw_events_by_the_ingest_rules(home):
    app = create_app(ServingSettings(home=home.home, collector_app_key=KEY))
    with TestClient(app) as client:
        answer = client.post(
            "/v1/events", json=[now_event(n) for n in range(20)], headers={"Authorization": f"Bearer {KEY}"}
        )
        assert answer.json()["accepted"] == 20
    result = ingest_stream(home)
    assert (len(result.batches), result.rows_accepted, result.rows_quarantined) == (1, 20, 0)
    (segment,) = closed_segments(stream_dir(home))
    rows = table(home, "select source, batch_id, landing_date, count(*) from raw.events group by all")
    assert rows == [("stream", stream_batch_id(segment), datetime.now(UTC).date(), 20)]
    assert table(home, "select source, rows_input, rows_accepted from raw.batches") == [("stream", 20, 20)]


def test_a_segment_is_ingested_once_and_a_replacing_run_replaces_it_exactly(home):
    today = datetime.now(UTC).date()
    write_segment(home, today, [orjson.dumps(now_event(n)) for n in range(10)])
    assert len(ingest_stream(home).batches) == 1
    assert ingest_stream(home).batches == []  # nothing new: nothing read, nothing duplicated
    write_segment(home, today, [orjson.dumps(now_event(n)) for n in range(10, 15)])
    second = ingest_stream(home)
    assert [b.rows_accepted for b in second.batches] == [5]
    replaced = ingest_stream(home, replace=True)
    assert [b.rows_accepted for b in replaced.batches] == [10, 5]
    assert table(home, "select count(*), count(distinct event_id) from raw.events") == [(15, 15)]
    assert table(home, "select count(*) from raw.batches") == [(2,)]


def test_bad_lines_of_a_segment_are_quarantined_with_their_reason_like_a_daily_files(home):
    day = datetime.now(UTC).date()
    lines = [
        orjson.dumps(now_event(1)),
        orjson.dumps(now_event(1)),  # re-sent after a timeout: the collector stored it twice
        b"\x00\x00\x00",  # what a disk may leave after a power loss
        orjson.dumps(now_event(3, event_ts=(datetime.now(UTC) - timedelta(days=10)).isoformat())),
    ]
    write_segment(home, day, lines)
    (batch,) = ingest_stream(home).batches
    assert batch.rows_accepted == 1
    assert batch.quarantined_by_reason == {"duplicate_event_id": 1, "malformed_json": 1, "late_beyond_window": 1}
    assert table(home, "select line_number, reason from quarantine.events order by 1") == [
        (2, "duplicate_event_id"), (3, "malformed_json"), (4, "late_beyond_window"),
    ]  # fmt: skip


def test_daily_files_and_micro_batches_of_the_same_day_never_replace_each_other(handmade):
    write_day(handmade, DAY, [json.dumps(event(1)), json.dumps(event(2))])
    stamp = (DAY + timedelta(hours=9)).isoformat()
    write_segment(handmade, DAY.date(), [orjson.dumps(now_event(n, event_ts=stamp)) for n in range(3)])
    ingest_interval(handmade, DAY, DAY + timedelta(days=1))
    ingest_stream(handmade)
    ingest_interval(handmade, DAY, DAY + timedelta(days=1))  # a re-run of the daily file: replaces its own rows
    counts = table(handmade, f"select source, count(*) from raw.events where landing_date = '{DAY.date()}' group by 1")
    assert sorted(counts) == [("recforge", 2), ("stream", 3)]


def test_with_no_closed_segment_the_warehouse_is_not_even_opened(home):
    result = ingest_stream(home)
    assert result.batches == [] and not home.warehouse_path.exists()


# --- the scaled configuration: the Redis Stream drained into segments, then the same ingest


def test_events_in_the_redis_stream_are_moved_to_segments_acknowledged_and_ingested(home, redis_db, monkeypatch):  # noqa: F811
    import redis

    monkeypatch.setenv("RECFORGE_COLLECTOR_BACKEND", "redis")
    monkeypatch.setenv("RECFORGE_COLLECTOR_REDIS_URL", redis_db)
    app = create_app(ServingSettings(home=home.home, collector_app_key=KEY, collector_backend="redis",
                                     collector_redis_url=redis_db))  # fmt: skip
    with TestClient(app) as client:
        answer = client.post(
            "/v1/events", json=[now_event(n) for n in range(30)], headers={"Authorization": f"Bearer {KEY}"}
        )
        assert answer.json()["accepted"] == 30
    result = ingest_stream(home)
    assert (len(result.batches), result.rows_accepted) == (1, 30)
    client = redis.Redis.from_url(redis_db)
    assert client.xlen("recforge:events") == 0  # durable in a segment, so acknowledged and deleted
    (group,) = client.xinfo_groups("recforge:events")
    assert group["pending"] == 0
    assert ingest_stream(home).batches == []


def test_a_drain_that_died_before_acknowledging_does_not_store_its_events_twice(home, redis_db):  # noqa: F811
    import redis

    from pipelines.ingest.stream_drain import REDIS_CONSUMER, _write_entries, drain_redis_stream

    collector = ServingSettings(home=home.home, collector_backend="redis", collector_redis_url=redis_db)
    client = redis.Redis.from_url(redis_db)
    client.xgroup_create("recforge:events", "recforge-ingest", id="0", mkstream=True)
    day = datetime.now(UTC).date().isoformat()
    for n in range(5):
        client.xadd("recforge:events", {"day": day, "event": orjson.dumps(now_event(n))})
    # A first run read the entries and made their segment durable, then died before XACK:
    ((_, entries),) = client.xreadgroup("recforge-ingest", REDIS_CONSUMER, {"recforge:events": ">"}, count=10_000)
    _write_entries(stream_dir(home), entries)
    client.xadd("recforge:events", {"day": day, "event": orjson.dumps(now_event(5))})  # and one more arrived
    assert drain_redis_stream(home, collector) == 6
    ids = [
        orjson.loads(line)["event_id"]
        for s in closed_segments(stream_dir(home))
        for line in s.read_bytes().splitlines()
    ]
    assert sorted(ids) == [f"s{n}" for n in range(6)]  # the 5 pending ones once, not twice
    assert client.xlen("recforge:events") == 0 and client.xpending("recforge:events", "recforge-ingest")["pending"] == 0


def test_a_day_through_the_collector_gives_the_raw_rows_the_same_day_as_a_daily_file_gives(handmade, tmp_path):
    """Same events, same rules, same window: the same accepted rows and the same quarantine reasons."""
    lines = [json.dumps(event(n)) for n in range(6)]
    lines += [json.dumps(event(2)), json.dumps(event(7, event_type="like")), json.dumps(event(8, user_id=""))]
    lines += [json.dumps(event(9, event_ts=(DAY - timedelta(days=10)).isoformat()))]
    write_day(handmade, DAY, lines)
    ingest_interval(handmade, DAY, DAY + timedelta(days=1))
    streamed = copy_home(handmade, tmp_path / "streamed")
    streamed.warehouse_path.unlink()
    write_segment(streamed, DAY.date(), [line.encode() for line in lines])
    ingest_stream(streamed)
    columns = "event_id, user_id, item_id, event_type, event_ts, value, session_id, context, landing_date, event_date"
    raw = f"select {columns} from raw.events order by event_id"
    quarantine = "select line_number, reason, raw from quarantine.events order by line_number"
    assert table(streamed, raw) == table(handmade, raw) and len(table(handmade, raw)) == 6
    assert table(streamed, quarantine) == table(handmade, quarantine)
    assert [r for _, r, _ in table(handmade, quarantine)] == [
        "duplicate_event_id", "unknown_event_type", "missing_user_id", "late_beyond_window",
    ]  # fmt: skip


def run_within(seconds: float, coroutine):
    """`asyncio.run(coroutine)` in a thread with a deadline: once, on a loaded CI machine, a trigger's loop never
    returned and held the whole suite; a trigger that hangs is the test's failure, named, not a stuck run."""
    outcome = {}

    def run() -> None:
        try:
            outcome["value"] = asyncio.run(coroutine)
        except BaseException as error:  # noqa: BLE001  (re-raised below, in the test's own thread)
            outcome["error"] = error

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=seconds)
    assert not worker.is_alive(), f"the stream trigger did not return within {seconds:.0f} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_the_stream_trigger_fires_once_events_wait_and_not_again_for_the_same_ones(redis_db):  # noqa: F811
    import redis

    from pipelines.ingest.stream_trigger import RedisStreamTrigger

    trigger = RedisStreamTrigger(redis_db, "recforge:events", poll_seconds=0.05)
    classpath, kwargs = trigger.serialize()
    assert classpath == "pipelines.ingest.stream_trigger.RedisStreamTrigger"
    assert RedisStreamTrigger(**kwargs).serialize() == (classpath, kwargs)  # what the triggerer rebuilds

    async def watch():
        events = trigger.run()
        nothing = asyncio.wait_for(anext(events), timeout=0.5)
        with pytest.raises(TimeoutError):  # an empty stream announces nothing
            await nothing
        events = trigger.run()
        client = redis.Redis.from_url(redis_db)
        client.xadd("recforge:events", {"day": "2026-01-05", "event": b"{}"})
        client.xadd("recforge:events", {"day": "2026-01-05", "event": b"{}"})
        fired = await asyncio.wait_for(anext(events), timeout=5)
        with pytest.raises(TimeoutError):  # the same waiting events are announced once
            await asyncio.wait_for(anext(events), timeout=0.5)
        return fired.payload

    payload = run_within(60, watch())
    assert payload["waiting"] == 2 and payload["stream"] == "recforge:events"


def test_a_cancelled_stream_trigger_lets_its_redis_command_finish_and_closes_after_it(redis_db, monkeypatch):  # noqa: F811
    """A cancel that reached a Redis command in flight is what redis-py cannot always unwind (the CI hang above):
    the trigger takes the cancel itself, lets the command end, then closes the client."""
    import redis.asyncio

    from pipelines.ingest.stream_trigger import RedisStreamTrigger

    happened = []

    async def slow_xlen(self, name):
        happened.append("command started")
        try:
            await asyncio.sleep(0.4)
        except asyncio.CancelledError:
            happened.append("command cancelled")
            raise
        happened.append("command ended")
        return 0

    real_aclose = redis.asyncio.Redis.aclose

    async def recorded_aclose(self, *args, **kwargs):
        happened.append("closed")
        await real_aclose(self, *args, **kwargs)

    monkeypatch.setattr(redis.asyncio.Redis, "xlen", slow_xlen)
    monkeypatch.setattr(redis.asyncio.Redis, "aclose", recorded_aclose)

    async def cancel_mid_command():
        started = time.perf_counter()
        with pytest.raises(TimeoutError):  # cancels the trigger 0.1 s into its first XLEN
            await asyncio.wait_for(anext(RedisStreamTrigger(redis_db, "recforge:events").run()), timeout=0.1)
        return time.perf_counter() - started

    took = run_within(10, cancel_mid_command())
    assert happened == ["command started", "command ended", "closed"]
    assert took < 1.5, f"the cancelled trigger took {took:.1f} s to return"


def test_a_slow_or_failing_redis_poll_is_logged_and_the_trigger_goes_on(redis_db, monkeypatch, capfd):  # noqa: F811
    import redis.asyncio

    from pipelines.ingest import stream_trigger

    calls = []
    real_xlen = redis.asyncio.Redis.xlen

    async def xlen_slow_then_failing_then_real(self, name):
        calls.append(name)
        if len(calls) == 1:
            await asyncio.sleep(0.3)  # past the 0.1 s poll bound: waited for again, not started twice
            raise redis.asyncio.ConnectionError("Redis is restarting")
        return await real_xlen(self, name)

    monkeypatch.setattr(redis.asyncio.Redis, "xlen", xlen_slow_then_failing_then_real)
    monkeypatch.setattr(stream_trigger, "POLL_TIMEOUT_SECONDS", 0.1)
    trigger = stream_trigger.RedisStreamTrigger(redis_db, "recforge:events", poll_seconds=0.01)

    async def watch():
        import redis as sync_redis

        sync_redis.Redis.from_url(redis_db).xadd("recforge:events", {"day": "2026-01-05", "event": b"{}"})
        events = trigger.run()
        fired = await asyncio.wait_for(anext(events), timeout=5)
        await events.aclose()
        return fired.payload

    payload = run_within(30, watch())
    assert payload["waiting"] == 1
    assert calls[0] == "recforge:events" and len(calls) == 2  # the slow first poll was not doubled
    logged = capfd.readouterr().out  # Airflow's structlog writes the trigger's log to standard output
    assert "reading Redis Stream 'recforge:events' took over 0.1 s" in logged, logged
    assert "cannot read Redis Stream 'recforge:events': Redis is restarting" in logged, logged


async def _close_that_never_returns(self, *args, **kwargs):
    await asyncio.Event().wait()


async def _close_that_outlives_its_cancellation(self, *args, **kwargs):
    try:
        await asyncio.sleep(5)
    except asyncio.CancelledError:  # goes on closing after the cancel, as redis-py's shielded teardown does
        await asyncio.sleep(5)


@pytest.mark.parametrize("close", [_close_that_never_returns, _close_that_outlives_its_cancellation])
def test_a_cancelled_stream_trigger_ends_within_its_close_bound_whatever_the_redis_close_does(
    redis_db,  # noqa: F811
    monkeypatch,
    close,
):
    """redis-py's close can wait forever after a cancelled command, and its teardown is shielded from cancellation;
    the triggerer must still get the trigger back within CLOSE_TIMEOUT_SECONDS (0.2 s here), not when the close
    ends (5 s and more)."""
    import redis.asyncio

    from pipelines.ingest import stream_trigger

    monkeypatch.setattr(redis.asyncio.Redis, "aclose", close)
    monkeypatch.setattr(stream_trigger, "CLOSE_TIMEOUT_SECONDS", 0.2)
    trigger = stream_trigger.RedisStreamTrigger(redis_db, "recforge:events", poll_seconds=0.05)

    async def cancel_it():
        started = time.perf_counter()
        with pytest.raises(TimeoutError):  # an empty stream: the wait times out and cancels the trigger
            await asyncio.wait_for(anext(trigger.run()), timeout=0.3)
        return time.perf_counter() - started

    took = run_within(10, cancel_it())
    assert took < 2.5, f"the cancelled trigger took {took:.1f} s: its close bound did not hold"


def test_micro_batches_run_on_a_host_without_the_collectors_key_file(home, monkeypatch):
    """An Airflow worker reads where events land, never the app key: a key file it lacks is no error."""
    monkeypatch.setenv("RECFORGE_COLLECTOR_APP_KEY_FILE", "/nonexistent/app_key")
    write_segment(home, datetime.now(UTC).date(), [orjson.dumps(now_event(1))])
    assert ingest_stream(home).rows_accepted == 1
