"""Impressions as their own ingest batches, and marts.slate_items joining outcomes to them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.ingest import ingest_interval
from pipelines.ingest.batch import IngestError
from pipelines.warehouse.connection import read_frame
from serving.impressions.format import SCHEMA, landing_dir, sealed_name
from tests.conftest import copy_home

DAY = datetime(2026, 1, 3, tzinfo=UTC)
SERVED = DAY + timedelta(hours=10)


def slate(request_id, items, user_id="u000044", served_at=SERVED, endpoint="recommendations", **overrides):
    row = {
        "request_id": request_id,
        "served_at": served_at,
        "endpoint": endpoint,
        "user_id": user_id if endpoint == "recommendations" else None,
        "anchor_item_id": None if endpoint == "recommendations" else user_id,
        "fallback": False,
        "version": "20260102T000000Z-v1",
        "experiment": None,
        "variant": None,
        "shadow": False,
        "item_ids": items,
        "scores": [1.0 / (n + 1) for n in range(len(items))],
        "propensities": None,
    }
    return row | overrides


def write_impressions(home, rows, process="p1", day=DAY):
    directory = landing_dir(home) / f"date={day:%Y-%m-%d}"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / sealed_name(int(day.timestamp()), process)
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)
    return path


ROWS = [
    slate("r1", ["i000129", "i000139", "i000001"]),
    slate("r2", ["i000002", "i000003"], user_id="i000005", endpoint="similar_items"),
    slate("r1", ["i000004"]),  # the same request id again
    slate("", ["i000004"]),
    slate("bad id", ["i000004"]),
    slate("r3", ["i000004"], user_id="bad user"),
    slate("r4", ["i000004", "i000005"], scores=[0.5]),
    slate("r5", ["i000004"], served_at=DAY + timedelta(days=2)),
    slate("r6", ["i000004"], served_at=DAY - timedelta(minutes=1)),
    slate("r7", ["i000004"], propensities=[1.5]),
]


@pytest.fixture
def home(built, tmp_path):
    return copy_home(built, tmp_path / "home")


def test_impression_files_are_batches_of_their_own_with_their_own_quarantine(home):
    write_impressions(home.home, ROWS)
    result = ingest_interval(home, DAY, DAY + timedelta(days=1))
    (batch,) = result.impressions
    assert (batch.rows_input, batch.rows_accepted, batch.rows_quarantined) == (10, 2, 8)
    assert batch.quarantined_by_reason == {
        "bad_propensity": 1, "bad_request_id": 1, "duplicate_request_id": 1, "future_timestamp": 1,
        "id_bad_characters": 1, "missing_request_id": 1, "outside_landing_day": 1, "slate_mismatch": 1,
    }  # fmt: skip
    items = read_frame(home, "select * from raw.impression_items order by request_id, position")
    assert list(zip(items["request_id"], items["position"], items["item_id"], strict=True)) == [
        ("r1", 1, "i000129"), ("r1", 2, "i000139"), ("r1", 3, "i000001"), ("r2", 1, "i000002"), ("r2", 2, "i000003"),
    ]  # fmt: skip
    assert set(items["slate_size"]) == {3, 2} and items["anchor_item_id"].dropna().tolist() == ["i000005"] * 2
    quarantined = read_frame(home, "select * from quarantine.impressions order by row_number")
    assert quarantined["row_number"].tolist() == list(range(3, 11))
    assert json.loads(quarantined["raw"][0])["item_ids"] == ["i000004"]
    batches = read_frame(home, "select * from raw.batches where source = 'impressions'")
    assert batches["batch_id"].tolist() == [f"impressions:2026-01-03:{sealed_name(int(DAY.timestamp()), 'p1')}"]
    assert "impressions: 1 file(s), 2 slates accepted, 8 quarantined" in result.summary()
    from pipelines.monitoring.status import _warehouse_lines

    assert "  impressions: 1 files, 2 slates accepted + 8 quarantined" in _warehouse_lines(home)


def test_re_ingesting_a_day_replaces_its_impressions(home):
    write_impressions(home.home, ROWS)
    ingest_interval(home, DAY, DAY + timedelta(days=1))
    ingest_interval(home, DAY, DAY + timedelta(days=1))
    assert read_frame(home, "select count(*) as n from raw.impression_items")["n"][0] == 5
    assert read_frame(home, "select count(*) as n from quarantine.impressions")["n"][0] == 8


def test_a_day_without_impressions_ingests_its_events_alone(home):
    result = ingest_interval(home, DAY, DAY + timedelta(days=1))
    assert result.impressions == [] and result.rows_accepted > 0


def test_a_file_outside_the_impression_schema_stops_the_run_naming_it(home):
    path = write_impressions(home.home, ROWS[:1])
    pq.write_table(pa.table({"request_id": ["r1"], "items": ["i1"]}), path)
    with pytest.raises(IngestError, match=rf"impressions/date=2026-01-03/{path.name}: not in the impression schema"):
        ingest_interval(home, DAY, DAY + timedelta(days=1))


def test_slate_items_joins_outcomes_naming_the_request_within_the_window(home):
    from pipelines.warehouse.transform import build_warehouse

    write_impressions(home.home, ROWS[:2])
    outcomes = [
        {"event_id": "o1", "user_id": "u000044", "item_id": "i000139", "event_type": "click",
         "event_ts": "2026-01-03T10:01:00Z", "context": {"request_id": "r1"}},
        {"event_id": "o2", "user_id": "u000044", "item_id": "i000139", "event_type": "purchase", "value": 19.5,
         "event_ts": "2026-01-03T11:00:00Z", "context": {"request_id": "r1"}},
        {"event_id": "o3", "user_id": "u000044", "item_id": "i000001", "event_type": "click",
         "event_ts": "2026-01-03T09:00:00Z", "context": {"request_id": "r1"}},  # before the answer
    ]  # fmt: skip
    events_dir = home.landing_dir / "events" / "date=2026-01-03"
    (events_dir / "outcomes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in outcomes))
    ingest_interval(home, DAY, DAY + timedelta(days=1))
    build_warehouse(home)
    mart = read_frame(home, "select * from marts.slate_items order by request_id, position")
    assert len(mart) == 5 and mart["shown"].all()
    r1 = mart[mart["request_id"] == "r1"].set_index("position")
    assert r1.loc[2, ["clicked", "converted", "revenue"]].tolist() == [True, True, 19.5]
    assert not r1.loc[1, "clicked"] and not r1.loc[3, "clicked"]
    assert mart["revenue"].sum() == 19.5


def test_slate_items_has_every_column_of_the_readouts_contract_with_its_type(home):
    from pipelines.experiments.contract import SLATE_ITEM_COLUMNS, SLATE_ITEMS_RELATION
    from pipelines.warehouse.transform import build_warehouse

    write_impressions(home.home, ROWS[:1])
    ingest_interval(home, DAY, DAY + timedelta(days=1))
    build_warehouse(home)
    schema, table = SLATE_ITEMS_RELATION.split(".")
    types = dict(
        read_frame(
            home,
            "select column_name, data_type from information_schema.columns where table_schema = ? and table_name = ?",
            [schema, table],
        ).itertuples(index=False)
    )
    assert {column: types.get(column) for column in SLATE_ITEM_COLUMNS} == SLATE_ITEM_COLUMNS
    served = read_frame(home, f"select event_ts from {SLATE_ITEMS_RELATION}")["event_ts"]
    assert (served == pd.Timestamp(SERVED)).all()


def test_a_shadow_slate_shares_its_request_id_and_lands_flagged(home):
    """A shadow variant's slate is logged under the shown slate's request id: not a duplicate, kept apart."""
    write_impressions(home.home, [
        slate("r1", ["i000129", "i000139"], experiment="home-ab", variant="control", propensities=[1.0, 1.0]),
        slate("r1", ["i000001", "i000002"], experiment="home-ab", variant="shadowed", shadow=True),
        slate("r1", ["i000003"], experiment="home-ab", variant="shadowed", shadow=True),
    ])  # fmt: skip
    (batch,) = ingest_interval(home, DAY, DAY + timedelta(days=1)).impressions
    assert (batch.rows_accepted, batch.quarantined_by_reason) == (2, {"duplicate_request_id": 1})
    items = read_frame(home, "select variant, shadow, item_id from raw.impression_items order by shadow, position")
    assert items.values.tolist() == [
        ["control", False, "i000129"], ["control", False, "i000139"],
        ["shadowed", True, "i000001"], ["shadowed", True, "i000002"],
    ]  # fmt: skip
    from pipelines.warehouse.transform import build_warehouse

    build_warehouse(home)  # the marts hold what was shown, never a shadow
    mart = read_frame(home, "select variant, item_id from marts.slate_items order by position")
    assert mart.values.tolist() == [["control", "i000129"], ["control", "i000139"]]


def test_a_file_from_before_the_shadow_column_is_read_as_shown_slates(home):
    from pipelines.ingest.impressions import SCHEMA_WITHOUT_SHADOW

    directory = landing_dir(home.home) / f"date={DAY:%Y-%m-%d}"
    directory.mkdir(parents=True, exist_ok=True)
    rows = [{k: v for k, v in slate("r1", ["i000129"]).items() if k != "shadow"}]
    pq.write_table(
        pa.Table.from_pylist(rows, schema=SCHEMA_WITHOUT_SHADOW), directory / sealed_name(int(DAY.timestamp()), "old")
    )
    (batch,) = ingest_interval(home, DAY, DAY + timedelta(days=1)).impressions
    assert batch.rows_accepted == 1
    assert read_frame(home, "select shadow from raw.impression_items")["shadow"].tolist() == [False]
