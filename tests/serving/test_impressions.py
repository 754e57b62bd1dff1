"""The impression log: every answer has a request id, and the slate it showed lands off the answer path."""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from datetime import UTC, datetime

import pandas as pd
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from pipelines.publication.publish import current_version
from serving.config import InvalidSettings, ServingSettings, load_settings
from serving.impressions.format import (
    COLUMNS,
    OPEN_DIR,
    PART_SUFFIX,
    SCHEMA,
    STREAM_FIELD,
    from_ipc_stream,
    landing_dir,
    sealed_name,
)
from serving.impressions.log import CHUNK_SLATES, RECOMMENDATIONS, FileSink, ImpressionLog
from serving.impressions.request_ids import REQUEST_ID_PATTERN, RequestIds
from serving.main import create_app
from serving.publication import Publication
from tests.serving.test_serving import wait_until


@contextmanager
def logging_client(home, **impressions):
    """A test client with the impression log on (flushed only at shutdown unless told otherwise)."""
    values = {"impressions_flush_seconds": 60.0, **impressions}
    app = create_app(ServingSettings(home=home, reload_interval_seconds=0.2, **values))
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, "the live publication never loaded")
        yield client


def landed(home) -> pd.DataFrame:
    files = sorted(landing_dir(home).glob("date=*/*.parquet"))
    if not files:
        return pd.DataFrame(columns=list(COLUMNS))
    return pd.concat([pq.read_table(f, schema=SCHEMA).to_pandas() for f in files], ignore_index=True)


@pytest.fixture(scope="module")
def live(published) -> Publication:
    return Publication(published.published_dir / current_version(published.published_dir))


@pytest.fixture
def home(published, tmp_path):
    """The published home's publications, with a landing directory of the test's own."""
    import shutil

    target = tmp_path / "home"
    shutil.copytree(published.published_dir, target / "published")
    return target


def requests_of_every_path(client, live):
    """(kind, answer) for the C path, the Python path (exclude, unknown user) and similar items."""
    known = str(live.user_ids[1])
    return [
        ("c_path", client.get(f"/v1/users/{known}/recommendations", params={"k": 5})),
        ("exclude", client.get(f"/v1/users/{known}/recommendations", params={"k": 4, "exclude": live.item_ids[0]})),
        ("fallback", client.get("/v1/users/never-seen/recommendations", params={"k": 3})),
        ("similar", client.get(f"/v1/items/{live.item_ids[2]}/similar", params={"k": 6})),
    ]


def test_every_answer_carries_a_unique_request_id_in_its_body_and_header(home, live):
    with logging_client(home) as client:
        answers = requests_of_every_path(client, live) + requests_of_every_path(client, live)
    ids = []
    for kind, answer in answers:
        assert answer.status_code == 200, kind
        body_id = answer.json()["request_id"]
        assert answer.headers["x-request-id"] == body_id, kind
        assert re.fullmatch(REQUEST_ID_PATTERN, body_id), body_id
        ids.append(body_id)
    assert len(set(ids)) == len(ids) == 8


def test_two_processes_never_share_an_id_prefix():
    first, second = RequestIds(), RequestIds()
    assert first.prefix != second.prefix
    assert first.new() != first.new()
    assert first.new()[:16] == first.prefix.encode()


def test_a_valid_client_request_id_is_kept_and_an_invalid_one_replaced(home, live):
    user = str(live.user_ids[0])
    with logging_client(home) as client:
        kept = client.get(f"/v1/users/{user}/recommendations", headers={"X-Request-ID": "app-42.x:1"})
        replaced = client.get(f"/v1/users/{user}/recommendations", headers={"X-Request-ID": 'a"b'})
        too_long = client.get(f"/v1/users/{user}/recommendations", headers={"X-Request-ID": "a" * 65})
    assert kept.json()["request_id"] == kept.headers["x-request-id"] == "app-42.x:1"
    for answer in (replaced, too_long):
        assert re.fullmatch(REQUEST_ID_PATTERN, answer.json()["request_id"])
        assert answer.json()["request_id"] == answer.headers["x-request-id"] not in ('a"b', "a" * 65)


def test_the_slate_of_every_answer_path_is_logged_and_shutdown_flushes_it(home, live):
    with logging_client(home) as client:
        answers = requests_of_every_path(client, live)
        # flush_seconds is 60: nothing is written before the server stops
        assert landed(home).empty
    rows = landed(home)
    assert sorted(rows["request_id"]) == sorted(answer.json()["request_id"] for _, answer in answers)
    for kind, answer in answers:
        body = answer.json()
        (logged,) = rows[rows["request_id"] == body["request_id"]].to_dict("records")
        assert list(logged["item_ids"]) == [item["item_id"] for item in body["items"]], kind
        assert list(logged["scores"]) == pytest.approx([item["score"] for item in body["items"]], rel=1e-5)
        assert logged["version"] == body["version"]
        # outside experiments and without exploration: no arm, never shadow, every item shown with certainty
        assert logged["experiment"] is None and logged["variant"] is None and not logged["shadow"]
        assert list(logged["propensities"]) == [1.0] * len(body["items"]), kind
        if kind != "similar":
            assert body["experiment"] is None and body["variant"] is None
        if kind == "similar":
            assert logged["endpoint"] == "similar_items" and logged["user_id"] is None
            assert logged["anchor_item_id"] == body["item_id"]
        else:
            assert logged["endpoint"] == "recommendations" and logged["anchor_item_id"] is None
            assert logged["user_id"] == body["user_id"] and logged["fallback"] == (kind == "fallback")
    served = rows["served_at"]
    assert served.dt.tz is not None and (served <= pd.Timestamp.now(tz="UTC")).all()
    # The C path's slate is the stored list's first k, taken from the publication's arrays by position.
    (known,) = rows[rows["request_id"] == answers[0][1].json()["request_id"]]["item_ids"]
    position = live.user_position(str(live.user_ids[1]))
    start = int(live.offsets[position])
    assert list(known) == [live.item_ids[r] for r in live.rec_items[start : start + 5]]


def test_one_file_per_interval_and_process_in_its_landing_day(home, live):
    with logging_client(home) as client:
        process = client.app.state.request_ids.prefix
        client.get(f"/v1/users/{live.user_ids[0]}/recommendations")
    files = sorted(p.relative_to(landing_dir(home)) for p in landing_dir(home).rglob("*.parquet"))
    assert len(files) == 1
    (day_part, name) = files[0].parts
    now = datetime.now(UTC)
    hour = int(now.replace(minute=0, second=0, microsecond=0).timestamp())
    assert day_part == f"date={now:%Y-%m-%d}" or now.minute == 0  # (a run across midnight may see the new day)
    assert name in {sealed_name(hour, process), sealed_name(hour - 3600, process)}
    assert not any((landing_dir(home) / OPEN_DIR).rglob("part-*")), "staged parts are removed once sealed"


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_intervals_are_sealed_into_their_own_files_once_over(tmp_path, live):
    root = tmp_path / "impressions"
    start = 1_764_720_000  # 2025-12-03T00:00:00Z, an interval boundary
    clock = Clock(start + 5)
    impressions = ImpressionLog(
        FileSink(root, "p1"), capacity=100, flush_seconds=1, interval_seconds=60, clock=clock, registry=None
    )
    impressions.stored_slate(b"r1", str(live.user_ids[0]), live, 0, 3)
    impressions.flush()
    clock.now = start + 61  # the next interval; the first is not sealed until its end plus two flushes
    impressions.stored_slate(b"r2", str(live.user_ids[1]), live, 1, 2)
    impressions.flush()
    assert not list(root.glob("date=*/*.parquet"))
    clock.now = start + 63
    impressions.flush()
    first = root / "date=2025-12-03" / sealed_name(start, "p1")
    assert [p.name for p in root.glob("date=*/*.parquet")] == [first.name]
    assert pq.read_table(first).column("request_id").to_pylist() == ["r1"]
    assert len(pq.read_table(first).column("item_ids")[0]) == 3
    impressions.stop()  # the open interval is sealed at shutdown
    second = root / "date=2025-12-03" / sealed_name(start + 60, "p1")
    (slate,) = pq.read_table(second).to_pylist()
    start_of_user = int(live.offsets[1])
    assert slate["request_id"] == "r2"
    assert slate["item_ids"] == [live.item_ids[r] for r in live.rec_items[start_of_user : start_of_user + 2]]


def test_a_full_queue_drops_and_counts_instead_of_waiting(live):
    registry = CollectorRegistry()
    impressions = ImpressionLog(
        FileSink.__new__(FileSink), capacity=2, flush_seconds=1, interval_seconds=60, registry=registry
    )
    started = time.perf_counter()
    for number in range(1000):
        impressions.stored_slate(b"r%d" % number, "u", live, 0, 3)
    assert time.perf_counter() - started < 0.5
    assert len(impressions._queue) == 2
    assert registry.get_sample_value("recforge_impressions_dropped_total", {"reason": "buffer_full"}) == 998
    assert registry.get_sample_value("recforge_impressions_queued") == 2


def test_the_server_keeps_answering_when_the_queue_is_full_and_metrics_show_the_drops(home, live):
    with logging_client(home, impressions_buffer_slates=1) as client:
        answers = [client.get(f"/v1/users/{live.user_ids[n]}/recommendations") for n in range(5)]
        metrics = client.get("/metrics").text
    assert [a.status_code for a in answers] == [200] * 5
    assert 'recforge_impressions_dropped_total{reason="buffer_full"} 4.0' in metrics
    assert set(landed(home)["request_id"]) == {answers[0].json()["request_id"]}


def test_a_failing_sink_drops_and_counts_the_batch_and_the_server_keeps_answering(home, live):
    # Nothing listens on port 9: every XADD fails.
    with logging_client(
        home, impressions_sink="redis", impressions_redis_url="redis://127.0.0.1:9/0", impressions_flush_seconds=0.05
    ) as client:
        answers = [client.get(f"/v1/users/{live.user_ids[n]}/recommendations") for n in range(3)]
        wait_until(
            lambda: 'recforge_impressions_dropped_total{reason="sink_error"} 3.0' in client.get("/metrics").text,
            "the failed batch was not counted",
        )
    assert [a.status_code for a in answers] == [200] * 3


def test_parts_a_crashed_process_left_are_sealed_by_the_next_start(home, live):
    root = landing_dir(home)
    start = 1_764_720_000
    crashed = ImpressionLog(
        FileSink(root, "deadbeef00000000"), capacity=10, flush_seconds=1, interval_seconds=3600, clock=Clock(start)
    )
    crashed.stored_slate(b"lost-process-1", str(live.user_ids[0]), live, 0, 2)
    crashed.flush()  # staged, never sealed: the process "crashed" here
    assert list((root / OPEN_DIR).rglob("part-*"))
    with logging_client(home):
        pass
    sealed = root / "date=2025-12-03" / sealed_name(start, "deadbeef00000000")
    assert pq.read_table(sealed).column("request_id").to_pylist() == ["lost-process-1"]
    assert not list((root / OPEN_DIR).rglob("part-*"))


def test_the_scaled_sink_adds_each_batch_to_a_redis_stream(home, live, redis_db):
    import redis

    with logging_client(home, impressions_sink="redis", impressions_redis_url=redis_db) as client:
        process = client.app.state.request_ids.prefix
        answers = [client.get(f"/v1/users/{live.user_ids[n]}/recommendations", params={"k": 3}) for n in range(4)]
    entries = redis.Redis.from_url(redis_db).xrange("recforge:impressions")
    assert len(entries) == 1  # one flush (at shutdown), one interval
    fields = entries[0][1]
    assert fields[b"process"].decode() == process and int(fields[b"rows"]) == 4
    table = from_ipc_stream(fields[STREAM_FIELD.encode()])
    assert table.column("request_id").to_pylist() == [a.json()["request_id"] for a in answers]
    assert [len(items) for items in table.column("item_ids").to_pylist()] == [3] * 4
    assert not landing_dir(home).exists()


def test_with_the_log_off_answers_still_carry_ids_and_nothing_is_written(home, live):
    with logging_client(home, impressions_sink="off") as client:
        answer = client.get(f"/v1/users/{live.user_ids[0]}/recommendations")
        assert client.app.state.impressions is None
    assert answer.json()["request_id"] == answer.headers["x-request-id"]
    assert not landing_dir(home).exists()


@pytest.mark.parametrize("seconds", ["7", "0", "86401"])
def test_an_interval_that_does_not_divide_a_day_is_refused_in_one_line(seconds, monkeypatch):
    monkeypatch.setenv("RECFORGE_IMPRESSIONS_INTERVAL_SECONDS", seconds)
    variable = "RECFORGE_IMPRESSIONS_INTERVAL_SECONDS"
    with pytest.raises(InvalidSettings, match=rf"^invalid setting: {variable}='?{seconds}'?: "):
        load_settings(ServingSettings)


def test_a_batch_is_written_column_by_column_in_the_contract_schema(tmp_path, live):
    impressions = ImpressionLog(FileSink(tmp_path, "p"), capacity=10, flush_seconds=1, interval_seconds=3600)
    impressions.stored_slate(b"a", str(live.user_ids[0]), live, 0, 2)
    impressions.slate(b"b", RECOMMENDATIONS, "new-user", live, live.fallback_items[:3], live.fallback_scores[:3], True)
    impressions.stop()
    (path,) = tmp_path.glob("date=*/*.parquet")
    table = pq.read_table(path)
    assert table.schema.equals(SCHEMA, check_metadata=False)
    rows = table.to_pylist()
    assert [(r["request_id"], len(r["item_ids"]), r["fallback"]) for r in rows] == [("a", 2, False), ("b", 3, True)]
    assert rows[1]["item_ids"] == [live.item_ids[i] for i in live.fallback_items[:3]]
    assert rows[1]["scores"] == pytest.approx(live.fallback_scores[:3].tolist())
    assert rows[0]["version"] == rows[1]["version"] == live.version


def test_a_forgotten_users_answers_leave_no_impression(home, live):
    from serving.denylist import DENYLIST, add_to_denylist

    forgotten, other = str(live.user_ids[0]), str(live.user_ids[1])
    add_to_denylist(home / "published" / DENYLIST, [forgotten], current_version(home / "published"))
    with logging_client(home) as client:
        wait_until(lambda: client.app.state.store.denies(forgotten), "the deny list was never read")
        assert client.get(f"/v1/users/{forgotten}/recommendations").json()["fallback"] is True
        kept = client.get(f"/v1/users/{other}/recommendations").json()["request_id"]
    rows = landed(home)
    assert rows["request_id"].tolist() == [kept] and forgotten not in rows["user_id"].tolist()


def test_a_batch_larger_than_a_chunk_is_one_part_per_interval_in_queue_order(tmp_path, live):
    """The writer converts CHUNK_SLATES at a time (handing the GIL to the answers in between); the files
    cannot tell: one staged part per interval per flush, every slate once, in the order they were queued."""
    start = 1_764_720_000
    clock = Clock(start + 5)
    impressions = ImpressionLog(FileSink(tmp_path, "p"), capacity=10_000, flush_seconds=1, interval_seconds=60,
                                clock=clock)  # fmt: skip
    total = 2 * CHUNK_SLATES + 7
    for number in range(total):
        clock.now = start + 5 if number < CHUNK_SLATES + 3 else start + 61  # the batch straddles two intervals
        impressions.stored_slate(b"r%d" % number, str(live.user_ids[number % 5]), live, number % 5, 2)
    assert impressions.flush() == total
    assert len(list((tmp_path / OPEN_DIR / "p").glob(f"*/*{PART_SUFFIX}"))) == 2
    impressions.stop()
    tables = [pq.read_table(path) for path in sorted(tmp_path.glob("date=*/*.parquet"))]
    assert [t.num_rows for t in tables] == [CHUNK_SLATES + 3, CHUNK_SLATES + 4]
    ids = [rid for table in tables for rid in table.column("request_id").to_pylist()]
    assert ids == [f"r{number}" for number in range(total)]
