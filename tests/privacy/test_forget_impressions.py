"""Forgetting reaches served slates: accepted impression rows and quarantined slates that name the user,
with the impression batches' counts still adding up."""

from __future__ import annotations

import json
from datetime import timedelta

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.ingest import ingest_interval
from pipelines.ingest.stream import stream_dir
from pipelines.privacy.forget import forget_in_landing, forget_users
from pipelines.warehouse.connection import connect
from serving.impressions.format import SCHEMA, landing_dir
from serving.impressions.log import RedisSink
from tests.conftest import copy_home, whole_log
from tests.ingest.test_impressions_ingest import slate, write_impressions
from tests.privacy.test_forget import published_user
from tests.services import redis_db  # noqa: F401  (a fixture)


def test_forgetting_removes_the_users_served_slates_and_quarantined_slates_and_keeps_the_counts(published, tmp_path):
    settings = copy_home(published, tmp_path / "home")
    user, other = published_user(settings, 7), published_user(settings, 8)
    start, _ = whole_log(settings)
    day = start + timedelta(days=1)
    served = day + timedelta(hours=9)
    write_impressions(
        settings.home,
        [
            slate("f1", ["i000001", "i000002"], user_id=user, served_at=served),
            slate("f2", ["i000003"], user_id=user, served_at=served),
            slate("f3", ["i000001", "i000002"], user_id=user, served_at=served, scores=[0.5]),  # quarantined
            slate("k1", ["i000004", "i000005"], user_id=other, served_at=served),
        ],
        day=day,
    )
    ingest_interval(settings, day, day + timedelta(days=1))
    with connect(settings) as con:
        assert con.execute("select count(*) from raw.impression_items where user_id = ?", [user]).fetchone()[0] == 3
        assert con.execute("select count(*) from quarantine.impressions where strpos(raw, ?) > 0", [user]).fetchone()[0]

    result = forget_users(settings, [user])

    removed = {o.store: o.rows_removed for o in result.stores}
    assert removed["quarantine"] >= 1
    with connect(settings) as con:
        assert con.execute("select count(*) from raw.impression_items where user_id = ?", [user]).fetchone()[0] == 0
        assert (
            con.execute("select count(*) from quarantine.impressions where strpos(raw, ?) > 0", [user]).fetchone()[0]
            == 0
        )
        assert con.execute("select count(*) from raw.impression_items where user_id = ?", [other]).fetchone()[0] == 2
        bad = con.execute(
            "select count(*) from raw.batches where rows_input <> rows_accepted + rows_quarantined"
        ).fetchone()
    assert bad[0] == 0
    assert result.verified is True and result.remaining == []


def test_forgetting_reaches_events_and_slates_still_waiting_in_the_scaled_redis_streams(
    built,
    tmp_path,
    redis_db,  # noqa: F811
    monkeypatch,
):
    import redis

    settings = copy_home(built, tmp_path / "home")
    for name, value in {"COLLECTOR_BACKEND": "redis", "COLLECTOR_REDIS_URL": redis_db, "IMPRESSIONS_SINK": "redis",
                        "IMPRESSIONS_REDIS_URL": redis_db}.items():  # fmt: skip
        monkeypatch.setenv(f"RECFORGE_{name}", value)
    user, other = "x900001", "x900002"  # in no simulated file: only the streams name them
    start, _ = whole_log(settings)
    served = start + timedelta(days=1, hours=9)
    client = redis.Redis.from_url(redis_db)
    for n, who in enumerate((user, other)):
        event = {"event_id": f"w{n}", "user_id": who, "item_id": "i000001", "event_type": "view",
                 "event_ts": served.isoformat()}  # fmt: skip
        client.xadd("recforge:events", {"day": served.date().isoformat(), "event": json.dumps(event)})
    sink = RedisSink(redis_db, "recforge:impressions", "p1")
    slates = [slate(f"w{n}", ["i000001"], user_id=who, served_at=served) for n, who in enumerate((user, other))]
    sink.write(int(served.timestamp()) // 3600 * 3600, pa.Table.from_pylist(slates, schema=SCHEMA))
    sink.close()

    outcome = forget_in_landing(settings, [user])

    assert client.xlen("recforge:events") == 0 and client.xlen("recforge:impressions") == 0  # landed, then walked
    assert outcome.rows_removed == 2
    segments = [line for path in stream_dir(settings).rglob("*.jsonl") for line in path.read_text().splitlines()]
    assert [json.loads(line)["user_id"] for line in segments] == [other]
    (slates,) = [pq.read_table(p) for p in landing_dir(settings.home).rglob("impressions-*.parquet")]
    assert slates.column("user_id").to_pylist() == [other]
