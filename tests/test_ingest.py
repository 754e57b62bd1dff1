import json
from datetime import UTC, datetime, timedelta

import pytest

from pipelines.ingest import IngestError, days_in_interval, ingest_interval
from pipelines.simulate import catalog_file, landing_file_for
from pipelines.warehouse import connect
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


@pytest.fixture
def handmade(tmp_path, simulated):
    """A home with the simulated catalog but hand-written landing files."""
    settings = copy_home(simulated, tmp_path / "home")
    for day_dir in (settings.landing_dir / "events").iterdir():
        for f in day_dir.iterdir():
            f.unlink()
        day_dir.rmdir()
    assert catalog_file(settings.landing_dir).exists()
    return settings


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
    ]
    write_day(handmade, DAY, bad_lines)
    result = ingest_interval(handmade, DAY, DAY + timedelta(days=1))
    assert (result.rows_input, result.rows_accepted, result.rows_quarantined) == (9, 1, 8)
    assert quarantined(handmade) == [
        (2, "missing_user_id"),
        (3, "missing_item_id"),
        (4, "unknown_event_type"),
        (5, "bad_timestamp"),
        (6, "future_timestamp"),
        (7, "duplicate_event_id"),
        (8, "malformed_json"),
        (9, "schema_mismatch"),
    ]


def test_an_event_id_accepted_on_another_day_is_a_duplicate(handmade):
    write_day(handmade, DAY, [json.dumps(event(1))])
    next_day = DAY + timedelta(days=1)
    write_day(handmade, next_day, [json.dumps(event(1, event_ts=(next_day + timedelta(hours=1)).isoformat()))])
    ingest_interval(handmade, DAY, DAY + timedelta(days=2))
    assert quarantined(handmade) == [(1, "duplicate_event_id")]


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
    with pytest.raises(IngestError, match=r"date=2026-03-01/events.jsonl"):
        ingest_interval(handmade, DAY, DAY + timedelta(days=1))


def test_a_failed_batch_leaves_the_warehouse_as_it_was(handmade):
    write_day(handmade, DAY, [json.dumps(event(1))])
    ingest_interval(handmade, DAY, DAY + timedelta(days=1))
    catalog_file(handmade.landing_dir).write_text('{"item_id": "x"}\n')  # lacks required columns
    with pytest.raises(IngestError, match="catalog lacks required column"):
        ingest_interval(handmade, DAY, DAY + timedelta(days=1))
    with connect(handmade) as con:
        assert con.execute("select count(*) from raw.events").fetchone()[0] == 1
        assert con.execute("select count(*) from raw.items").fetchone()[0] == handmade.sim_items


def test_an_interval_owns_the_days_whose_midnight_it_contains():
    assert days_in_interval(DAY, DAY + timedelta(days=1)) == [DAY.date()]
    assert days_in_interval(DAY, DAY + timedelta(days=3)) == [DAY.date() + timedelta(days=n) for n in range(3)]
    assert days_in_interval(DAY + timedelta(hours=1), DAY + timedelta(days=1)) == []
