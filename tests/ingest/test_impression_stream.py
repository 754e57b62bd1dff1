"""The scaled configuration's impression log: serving's Redis Stream is moved into sealed landing files,
acknowledged only once they are durable, and ingested by the same daily path as the embedded default's."""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.ingest import ingest_interval
from pipelines.ingest.batch import IngestError
from pipelines.ingest.impression_stream import (
    IMPRESSIONS_CONSUMER,
    IMPRESSIONS_GROUP,
    drain_impression_stream,
    write_landing_files,
)
from pipelines.warehouse.connection import connect
from serving.config import ServingSettings
from serving.impressions.format import SCHEMA, landing_dir
from serving.impressions.log import RedisSink
from tests.conftest import copy_home
from tests.ingest.test_impressions_ingest import DAY, SERVED, slate
from tests.services import redis_db  # noqa: F401  (a fixture)

STREAM = "recforge:impressions"
INTERVAL = int(DAY.timestamp())


@pytest.fixture
def home(built, tmp_path):
    return copy_home(built, tmp_path / "home")


def batch(*rows) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=SCHEMA)


def serving(home, url) -> ServingSettings:
    return ServingSettings(home=home.home, impressions_sink="redis", impressions_redis_url=url)


def test_slates_in_the_redis_stream_land_as_files_are_acknowledged_and_ingested(home, redis_db, monkeypatch):  # noqa: F811
    import redis

    monkeypatch.setenv("RECFORGE_IMPRESSIONS_SINK", "redis")
    monkeypatch.setenv("RECFORGE_IMPRESSIONS_REDIS_URL", redis_db)
    sinks = [RedisSink(redis_db, STREAM, process) for process in ("p1", "p2")]  # two servers, one stream
    sinks[0].write(INTERVAL, batch(slate("r1", ["i000001", "i000002"]), slate("r2", ["i000003"])))
    sinks[1].write(INTERVAL, batch(slate("r3", ["i000004"], served_at=SERVED + timedelta(minutes=5))))
    sinks[0].write(INTERVAL + 3600, batch(slate("r4", ["i000005", "i000006"], served_at=SERVED + timedelta(hours=1))))

    ingest_interval(home, DAY, DAY + timedelta(days=1))

    client = redis.Redis.from_url(redis_db)
    assert client.xlen(STREAM) == 0  # durable in landing files, so acknowledged and deleted
    (group,) = client.xinfo_groups(STREAM)
    assert group["pending"] == 0
    files = sorted(landing_dir(home.home).rglob("impressions-*.parquet"))
    assert len(files) == 2  # one per interval of the read
    with connect(home) as con:
        rows = con.execute("select request_id, count(*) from raw.impression_items group by 1 order by 1").fetchall()
        balanced = con.execute(
            "select count(*), bool_and(rows_input = rows_accepted + rows_quarantined) from raw.batches "
            "where source = 'impressions'"
        ).fetchone()
    assert rows == [("r1", 2), ("r2", 1), ("r3", 1), ("r4", 2)]
    assert balanced == (2, True)
    # A re-run of the day reads the same files again and replaces the day: the same rows, none twice.
    ingest_interval(home, DAY, DAY + timedelta(days=1))
    with connect(home) as con:
        again = con.execute("select request_id, count(*) from raw.impression_items group by 1 order by 1").fetchall()
    assert again == rows
    for sink in sinks:
        sink.close()


def test_a_drain_that_died_before_acknowledging_stores_no_slate_twice(home, redis_db):  # noqa: F811
    import redis

    client = redis.Redis.from_url(redis_db)
    client.xgroup_create(STREAM, IMPRESSIONS_GROUP, id="0", mkstream=True)
    sink = RedisSink(redis_db, STREAM, "p1")
    for n in range(3):
        sink.write(INTERVAL, batch(slate(f"r{n}", ["i000001"])))
    # A first run read the entries and made their file durable, then died before XACK:
    ((_, entries),) = client.xreadgroup(IMPRESSIONS_GROUP, IMPRESSIONS_CONSUMER, {STREAM: ">"}, count=1_000)
    write_landing_files(landing_dir(home.home), STREAM, entries)
    sink.write(INTERVAL, batch(slate("r3", ["i000002"])))  # and one more arrived

    assert drain_impression_stream(home.home, serving(home, redis_db)) == 4

    tables = [pq.read_table(p) for p in sorted(landing_dir(home.home).rglob("impressions-*.parquet"))]
    assert sorted(r for t in tables for r in t.column("request_id").to_pylist()) == ["r0", "r1", "r2", "r3"]
    assert client.xlen(STREAM) == 0 and client.xpending(STREAM, IMPRESSIONS_GROUP)["pending"] == 0
    sink.close()


def test_an_entry_that_is_not_an_impression_batch_stops_the_drain_naming_it_and_loses_nothing(home, redis_db):  # noqa: F811
    import redis

    client = redis.Redis.from_url(redis_db)
    sink = RedisSink(redis_db, STREAM, "p1")
    sink.write(INTERVAL, batch(slate("r1", ["i000001"])))
    bad = client.xadd(STREAM, {"interval": "20260103T000000Z", "arrow": b"not arrow"}).decode()
    sink.close()

    with pytest.raises(IngestError, match=f"Redis Stream 'recforge:impressions' entry {bad}: not an impression batch"):
        drain_impression_stream(home.home, serving(home, redis_db))

    # Nothing of the read was acknowledged or deleted, and no file was written: the next run sees it all.
    assert client.xlen(STREAM) == 2
    assert client.xpending(STREAM, IMPRESSIONS_GROUP)["pending"] == 2
    assert not list(landing_dir(home.home).rglob("impressions-*.parquet"))
    client.xadd(STREAM, {"rows": "1"})  # no Arrow field at all
    with pytest.raises(IngestError, match="not an impression batch"):
        write_landing_files(landing_dir(home.home), STREAM, client.xrange(STREAM, "-", "+")[-1:])
