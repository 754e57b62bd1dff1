import json
from datetime import UTC, date, datetime, timedelta

import pytest

from pipelines.ingest import IngestError, days_in_interval, ingest_interval
from pipelines.ingest.batch import EVENT_UTC_DAY
from pipelines.simulate import catalog_file, landing_file_for
from pipelines.warehouse.connection import connect
from tests.conftest import copy_home

DAY = datetime(2026, 3, 1, tzinfo=UTC)


def event(n: int, **fields) -> dict:
    base = {
        "event_id": f"t{n}",
        "user_id": "u1",
        "item_id": "i000001",
        "event_type": "view",
        "event_ts": (DAY + timedelta(minutes=n)).isoformat().replace("+00:00", "Z"),
        "value": None,
        "session_id": "s1",
        "context": {"device": "mobile"},
    }
    return {**base, **fields}


def write_day(settings, day: datetime, lines: list[str]) -> None:
    path = landing_file_for(settings.landing_dir, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.scaled)])
def target_home(request, handmade):
    """`handmade` with the warehouse in DuckDB, and again in a fresh PostgreSQL database.

    On PostgreSQL the rules run in an in-memory DuckDB fed from PostgreSQL: the behaviours that
    depend on earlier batches (cross-day duplicates, re-runs, all-or-nothing runs) must not change.
    """
    if request.param == "duckdb":
        return handmade
    database = request.getfixturevalue("postgres_database")
    return handmade.model_copy(update={"dbt_target": "postgres", "pg_database": database})


def quarantined(settings) -> list[tuple[int, str]]:
    with connect(settings) as con:
        return con.execute("select line_number, reason from quarantine.events order by line_number").fetchall()


def test_every_input_row_is_accepted_or_quarantined(built):
    with connect(built) as con:
        batches = con.execute("select file, rows_input, rows_accepted, rows_quarantined from raw.batches").fetchall()
        events = con.execute("select count(*) from raw.events").fetchone()[0]
        rejected = con.execute("select count(*) from quarantine.events").fetchone()[0]
    assert len(batches) == built.sim_days
    for file, rows_in, accepted, rejected_rows in batches:
        lines = [x for x in (built.landing_dir / file).read_text().splitlines() if x.strip()]
        assert rows_in == len(lines) == accepted + rejected_rows
    assert events + rejected == sum(b[1] for b in batches)


def test_quarantine_catches_exactly_the_injected_defects(built):
    truth = json.loads((built.landing_dir / "simulation.json").read_text())
    with connect(built) as con:
        by_reason = dict(con.execute("select reason, count(*) from quarantine.events group by reason").fetchall())
    expected = {
        "duplicate_event_id": truth["duplicates_injected"],
        "bot_suspected": truth["bot_events"],
        **{kind: n for kind, n in truth["malformed_injected"].items() if kind != "not_json"},
    }
    if truth["retry_duplicates_injected"]:
        expected["retry_duplicate"] = truth["retry_duplicates_injected"]
    if truth["malformed_injected"].get("not_json"):
        expected["malformed_json"] = truth["malformed_injected"]["not_json"]
    assert by_reason == expected


def test_quarantined_rows_keep_their_raw_text_and_line_number(built):
    with connect(built) as con:
        rows = con.execute("select file, line_number, raw from quarantine.events limit 50").fetchall()
    for file, line_number, raw in rows:
        assert (built.landing_dir / file).read_text().splitlines()[line_number - 1] == raw


def test_rerunning_an_interval_replaces_its_rows_instead_of_adding(built, tmp_path):
    settings = copy_home(built, tmp_path / "home")
    start = datetime.combine(settings.sim_start_date, datetime.min.time(), tzinfo=UTC) + timedelta(days=2)

    def snapshot():
        with connect(settings) as con:
            return (
                con.execute("select count(*), sum(hash(event_id)) from raw.events").fetchone(),
                con.execute("select count(*) from quarantine.events").fetchone(),
                con.execute("select count(*) from raw.batches").fetchone(),
            )

    before = snapshot()
    ingest_interval(settings, start, start + timedelta(days=1))
    ingest_interval(settings, start, start + timedelta(days=1))
    assert snapshot() == before


def test_each_kind_of_bad_row_lands_in_quarantine_with_its_reason(handmade):
    first_ts = DAY + timedelta(minutes=1)
    bad_lines = [
        json.dumps(event(1)),  # good
        json.dumps(event(2, user_id=None)),
        json.dumps({k: v for k, v in event(3).items() if k != "item_id"}),
        json.dumps(event(4, event_type="hover")),
        json.dumps(event(5, event_ts="not a time")),
        json.dumps(event(6, event_ts="2099-01-01T00:00:00Z")),
        json.dumps(event(1)),  # duplicate of line 1
        '{"event_id": "t8", "user_id": ',  # truncated JSON
        json.dumps(["not", "an", "object"]),
        json.dumps(event(10, event_id="")),
        json.dumps(event(11, value="lots")),  # value is not a number
        json.dumps(event(12, user_id={"nested": "object"})),
        json.dumps(event(13, event_id="t13-retry", event_ts=(first_ts + timedelta(milliseconds=400)).isoformat())),
        json.dumps(event(14, event_ts=(DAY - timedelta(days=handmade.late_arrival_days + 1)).isoformat())),
    ]
    write_day(handmade, DAY, bad_lines)
    result = ingest_interval(handmade, DAY, DAY + timedelta(days=1))
    assert (result.rows_input, result.rows_accepted, result.rows_quarantined) == (14, 1, 13)
    assert quarantined(handmade) == [
        (2, "missing_user_id"),
        (3, "missing_item_id"),
        (4, "unknown_event_type"),
        (5, "bad_timestamp"),
        (6, "future_timestamp"),
        (7, "duplicate_event_id"),
        (8, "malformed_json"),
        (9, "schema_mismatch"),
        (10, "missing_event_id"),
        (11, "schema_mismatch"),
        (12, "schema_mismatch"),
        (13, "retry_duplicate"),
        (14, "late_beyond_window"),
    ]


def test_a_line_that_is_not_utf8_is_quarantined_with_its_bytes_escaped(handmade):
    path = landing_file_for(handmade.landing_dir, DAY)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(json.dumps(event(1)).encode() + b"\n" + b'{"event_id": "t2", "user_id": "\xff"}\n')
    result = ingest_interval(handmade, DAY, DAY + timedelta(days=1))
    assert (result.rows_accepted, result.rows_quarantined) == (1, 1)
    with connect(handmade) as con:
        assert con.execute("select reason, raw from quarantine.events").fetchall() == [
            ("invalid_utf8", '{"event_id": "t2", "user_id": "\\xff"}')
        ]


def test_a_late_event_lands_in_its_own_day_without_duplicating(target_home):
    on_time = event(1, event_ts=(DAY + timedelta(hours=3)).isoformat())
    write_day(target_home, DAY, [json.dumps(on_time)])
    write_day(
        target_home, DAY + timedelta(days=1), [json.dumps(event(2, event_ts=(DAY + timedelta(days=1)).isoformat()))]
    )
    late = event(3, event_ts=(DAY + timedelta(hours=5)).isoformat())  # happened on DAY, delivered two days later
    write_day(target_home, DAY + timedelta(days=2), [json.dumps(late), json.dumps(on_time)])  # and a re-delivery
    for offset in range(3):  # the daily runs, in order, then the last one again
        ingest_interval(target_home, DAY + timedelta(days=offset), DAY + timedelta(days=offset + 1))
    result = ingest_interval(target_home, DAY + timedelta(days=2), DAY + timedelta(days=3))
    assert (result.rows_accepted, result.rows_late, result.rows_quarantined) == (1, 1, 1)
    with connect(target_home) as con:
        rows = con.execute("select event_id, event_date, landing_date from raw.events order by event_id").fetchall()
    assert rows == [
        ("t1", DAY.date(), DAY.date()),
        ("t2", DAY.date() + timedelta(days=1), DAY.date() + timedelta(days=1)),
        ("t3", DAY.date(), DAY.date() + timedelta(days=2)),
    ]
    assert quarantined(target_home) == [(2, "duplicate_event_id")]


def test_the_event_day_and_lateness_are_utc_days_to_the_microsecond(target_home):
    """event_date and `late` are computed by arithmetic on the microseconds (EVENT_UTC_DAY), not by
    a calendar cast: held here to what the calendar says at the edges of a UTC day."""
    stamps = {
        "t1": "2026-01-05T23:59:59.999999Z",  # the last microsecond before the landing day: late
        "t2": "2026-01-06T00:00:00Z",  # its first: on time
        "t3": "2026-01-06T01:30:00+02:00",  # 23:30 UTC the day before: late, whatever its own offset says
        "t4": "2026-01-05T22:30:00-02:00",  # 00:30 UTC on the landing day: on time
    }
    day = datetime(2026, 1, 6, tzinfo=UTC)
    write_day(target_home, day, [json.dumps(event(int(k[1]), item_id=f"i{k}", event_ts=v)) for k, v in stamps.items()])
    result = ingest_interval(target_home, day, day + timedelta(days=1))
    assert (result.rows_accepted, result.rows_late) == (4, 2)
    with connect(target_home) as con:
        rows = con.execute("select event_id, event_date from raw.events order by event_id").fetchall()
        (before_1970,) = con.sql_engine.execute(  # the rules' engine (DuckDB) whatever the warehouse
            f"select {EVENT_UTC_DAY} from (select timestamptz '1969-12-31 23:59:59.999999+00' as event_ts)"
        ).fetchone()
    previous = (day - timedelta(days=1)).date()
    assert rows == [("t1", previous), ("t2", day.date()), ("t3", previous), ("t4", day.date())]
    assert before_1970 == date(1969, 12, 31)


def test_an_unknown_extra_column_is_kept_in_context(handmade):
    write_day(handmade, DAY, [json.dumps(event(1, campaign="spring", experiment={"arm": "b"}))])
    ingest_interval(handmade, DAY, DAY + timedelta(days=1))
    with connect(handmade) as con:
        context = json.loads(con.execute("select context from raw.events").fetchone()[0])
    assert context == {"device": "mobile", "campaign": "spring", "experiment": {"arm": "b"}}


def test_a_required_column_missing_from_the_file_fails_the_batch_naming_file_and_column(handmade):
    write_day(handmade, DAY, [json.dumps({k: v for k, v in event(n).items() if k != "event_type"}) for n in range(3)])
    expected = r"date=2026-03-01/events.jsonl: no row has the required column\(s\) event_type"
    with pytest.raises(IngestError, match=expected):
        ingest_interval(handmade, DAY, DAY + timedelta(days=1))
    with connect(handmade) as con:
        assert con.execute("select count(*) from raw.batches").fetchone()[0] == 0


def test_csv_and_parquet_landing_files_are_batches_of_the_same_day(handmade):
    import pandas as pd

    day_dir = landing_file_for(handmade.landing_dir, DAY).parent
    day_dir.mkdir(parents=True, exist_ok=True)
    rows = pd.DataFrame([event(n) for n in range(1, 4)]).drop(columns=["context"])
    rows["channel"] = "email"  # an extra column
    rows.iloc[:2].to_csv(day_dir / "shop.csv", index=False)
    rows.iloc[2:].to_parquet(day_dir / "app.parquet", index=False)
    result = ingest_interval(handmade, DAY, DAY + timedelta(days=1))
    assert sorted((b.file, b.rows_accepted) for b in result.batches) == [
        ("events/date=2026-03-01/app.parquet", 1),
        ("events/date=2026-03-01/shop.csv", 2),
    ]
    with connect(handmade) as con:
        assert {c for (c,) in con.execute("select context from raw.events").fetchall()} == {'{"channel":"email"}'}


def test_a_csv_without_a_required_column_fails_naming_file_and_column(handmade):
    day_dir = landing_file_for(handmade.landing_dir, DAY).parent
    day_dir.mkdir(parents=True, exist_ok=True)
    (day_dir / "shop.csv").write_text("event_id,user_id,event_type,event_ts\ne1,u1,view,2026-03-01T10:00:00Z\n")
    with pytest.raises(IngestError, match=r"shop.csv: missing required column\(s\) item_id"):
        ingest_interval(handmade, DAY, DAY + timedelta(days=1))


def test_an_event_id_accepted_on_another_day_is_a_duplicate(target_home):
    write_day(target_home, DAY, [json.dumps(event(1))])
    next_day = DAY + timedelta(days=1)
    write_day(target_home, next_day, [json.dumps(event(1, event_ts=(next_day + timedelta(hours=1)).isoformat()))])
    ingest_interval(target_home, DAY, DAY + timedelta(days=2))
    assert quarantined(target_home) == [(1, "duplicate_event_id")]


def test_a_user_above_the_per_minute_rate_is_quarantined_as_a_bot(handmade):
    burst = [
        json.dumps(event(n, user_id="bot", event_ts=(DAY + timedelta(seconds=n)).isoformat()))
        for n in range(handmade.bot_max_events_per_minute + 1)
    ]
    human = [json.dumps(event(100 + n, user_id="human")) for n in range(5)]
    write_day(handmade, DAY, burst + human)
    result = ingest_interval(handmade, DAY, DAY + timedelta(days=1))
    assert result.rows_accepted == 5
    assert {reason for _, reason in quarantined(handmade)} == {"bot_suspected"}


def test_a_missing_landing_file_fails_the_batch_naming_the_file(handmade):
    with pytest.raises(IngestError, match=r"no landing file for 2026-03-01: expected .*date=2026-03-01/\*\.jsonl"):
        ingest_interval(handmade, DAY, DAY + timedelta(days=1))


def test_a_failed_batch_leaves_the_warehouse_as_it_was(target_home):
    write_day(target_home, DAY, [json.dumps(event(1))])
    ingest_interval(target_home, DAY, DAY + timedelta(days=1))
    catalog_file(target_home.landing_dir).write_text('{"item_id": "x"}\n')  # lacks required columns
    with pytest.raises(IngestError, match="catalog lacks required column"):
        ingest_interval(target_home, DAY, DAY + timedelta(days=1))
    with connect(target_home) as con:
        assert con.execute("select count(*) from raw.events").fetchone()[0] == 1
        assert con.execute("select count(*) from raw.items").fetchone()[0] == target_home.sim_items


def test_an_interval_owns_the_days_whose_midnight_it_contains():
    assert days_in_interval(DAY, DAY + timedelta(days=1)) == [DAY.date()]
    assert days_in_interval(DAY, DAY + timedelta(days=3)) == [DAY.date() + timedelta(days=n) for n in range(3)]
    assert days_in_interval(DAY + timedelta(hours=1), DAY + timedelta(days=1)) == []


def catalog_state(settings) -> tuple[int, list]:
    with connect(settings) as con:
        items = con.execute("select count(*) from raw.items").fetchone()[0]
        return items, con.execute("select sha256, items from raw.catalog_snapshot").fetchall()


def test_an_unchanged_catalog_file_is_not_reloaded_and_a_changed_one_is(handmade):
    write_day(handmade, DAY, [json.dumps(event(1))])
    ingest_interval(handmade, DAY, DAY + timedelta(days=1))
    items, snapshot = catalog_state(handmade)
    assert items == handmade.sim_items and snapshot[0][1] == items
    with connect(handmade) as con:  # what only a reload would undo: the run must keep it
        con.execute("update raw.items set title = 'kept' where item_id = (select min(item_id) from raw.items)")
    ingest_interval(handmade, DAY, DAY + timedelta(days=1))
    with connect(handmade) as con:
        assert con.execute("select count(*) from raw.items where title = 'kept'").fetchone()[0] == 1

    with connect(handmade) as con:  # raw.items no longer has the file's rows: reloaded although the file is the same
        con.execute("delete from raw.items where item_id = (select min(item_id) from raw.items)")
    ingest_interval(handmade, DAY, DAY + timedelta(days=1))
    assert catalog_state(handmade) == (items, snapshot)

    path = catalog_file(handmade.landing_dir)
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:3]))  # a new snapshot: 3 items
    result = ingest_interval(handmade, DAY, DAY + timedelta(days=1))
    items, new_snapshot = catalog_state(handmade)
    assert result.catalog_items == items == 3 and new_snapshot[0][1] == 3 and new_snapshot[0][0] != snapshot[0][0]


def test_intervals_on_one_open_connection_each_commit_alone(handmade):
    write_day(handmade, DAY, [json.dumps(event(1)), json.dumps(event(2))])
    next_day = DAY + timedelta(days=1)
    with connect(handmade) as warehouse:
        first = ingest_interval(handmade, DAY, next_day, warehouse)
        with pytest.raises(IngestError, match="no landing file for 2026-03-02"):
            ingest_interval(handmade, next_day, next_day + timedelta(days=1), warehouse)
        assert warehouse.execute("select count(*) from raw.events").fetchone()[0] == 2  # the failed one rolled back
    assert first.rows_accepted == 2
    with connect(handmade) as con:
        assert con.execute("select count(*) from raw.batches").fetchone()[0] == 1


def test_an_interval_on_a_callers_connection_leaves_its_checkpoint_setting_as_it_was(handmade):
    """An interval puts DuckDB's checkpoints off while it appends (DuckDBWarehouse.appending), and gives the
    caller's setting back afterwards, when it fails too."""
    write_day(handmade, DAY, [json.dumps(event(1))])
    setting = "select current_setting('checkpoint_threshold')"
    with connect(handmade) as warehouse:
        warehouse.execute("set checkpoint_threshold = '7 MiB'")
        before = warehouse.execute(setting).fetchall()
        ingest_interval(handmade, DAY, DAY + timedelta(days=1), warehouse)
        assert warehouse.execute(setting).fetchall() == before
        catalog_file(handmade.landing_dir).write_text('{"item_id": "x"}\n')  # fails inside the transaction
        with pytest.raises(IngestError, match="catalog lacks required column"):
            ingest_interval(handmade, DAY, DAY + timedelta(days=1), warehouse)
        assert warehouse.execute(setting).fetchall() == before
        assert warehouse.execute("select count(*) from raw.events").fetchone()[0] == 1
    with connect(handmade) as con:  # the owned connection's commit wrote the day: it is there after reopening
        assert con.execute("select count(*) from raw.events").fetchone()[0] == 1
