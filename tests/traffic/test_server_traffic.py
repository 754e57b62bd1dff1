"""The simulated users against the real server (serving's app in-process on a published home): their
events land as ordinary landing files naming the answers' request ids, the server's impressions land
beside them, and after ingest and dbt the impressions mart joins the two; the demo A/B of `recforge
run` does all of it and prints the readout."""

import json
from datetime import UTC, datetime

import pyarrow.parquet as pq

from pipelines.experiments.state import STOPPED, status_of
from pipelines.ingest.impressions import impression_files
from pipelines.runtime.ab_demo import DEMO_EXPERIMENT, SCRATCH_HOME, demo_on, run_demo, scratch_home
from pipelines.traffic.run import simulate_server_traffic
from pipelines.warehouse.connection import connect
from pipelines.warehouse.transform import dbt_parses_dir
from tests.conftest import copy_home


def landed_events(settings) -> list[dict]:
    files = sorted((settings.landing_dir / "events").glob("date=*/traffic-*.jsonl"))
    return [json.loads(line) for path in files for line in path.read_text().splitlines()]


def test_the_events_of_a_visit_carry_the_request_id_of_the_answer_the_server_logged(published, tmp_path):
    settings = copy_home(published, tmp_path / "home", traffic_visit_rate=2.0)
    run = simulate_server_traffic(settings)
    assert run.requests > 50 and run.unknown_items == 0
    events = landed_events(settings)
    assert len(events) == sum(run.events_by_type.values()) and run.events_by_type.get("click", 0) > 0
    served = set(run.shown.request_id)
    assert {e["context"]["request_id"] for e in events} <= served
    assert len({e["event_id"] for e in events}) == len(events)
    logged = {
        str(r) for path in impression_files(settings.home, datetime.now(UTC).date())
        for r in pq.read_table(path, columns=["request_id"])["request_id"].to_pylist()
    }  # fmt: skip
    assert served <= logged  # the server sealed its impression file when the in-process run stopped


def test_the_same_seed_makes_the_same_choices_against_the_same_answers(published, tmp_path):
    first = simulate_server_traffic(copy_home(published, tmp_path / "a"))
    second = simulate_server_traffic(copy_home(published, tmp_path / "b"))
    assert first.events_by_type == second.events_by_type
    assert first.shown.clicked == second.shown.clicked and first.shown.item == second.shown.item


def test_the_demo_ab_ingests_the_traffic_joins_it_to_the_impressions_and_stops(published, tmp_path, capsys):
    home = copy_home(published, tmp_path / "home")
    scratch = scratch_home(home)
    kept_parses = sorted(path.name for path in dbt_parses_dir(home).iterdir())
    assert kept_parses and sorted(path.name for path in dbt_parses_dir(scratch).iterdir()) == kept_parses
    outcome = demo_on(scratch, home)
    assert status_of(scratch, DEMO_EXPERIMENT) == STOPPED
    assert DEMO_EXPERIMENT in outcome.readout or outcome.readout.startswith("blocked")
    assert outcome.routed  # serving split the users between the champion and the holdback
    clicks = sum(1 for e in landed_events(scratch) if e["event_type"] == "click")
    with connect(scratch, must_exist=True) as warehouse:
        joined = warehouse.con.execute("select count(*) from marts.slate_items where clicked").fetchone()[0]
        shown = warehouse.con.execute("select count(*) from marts.slate_items").fetchone()[0]
    assert clicks > 0 and joined == clicks  # every click names a shown item of its answer, once
    assert shown >= clicks
    assert (home.reports_dir / "experiments" / f"{DEMO_EXPERIMENT}.html").exists()
    print("\n".join(outcome.lines()))


def test_the_demo_leaves_the_homes_warehouse_and_landing_as_they_were_and_no_copy_behind(published, tmp_path):
    """Its wall-clock events would otherwise become the next run's test period (the simulated log is in
    the past), and a copy of the warehouse left behind would be one more place holding users' events."""
    home = copy_home(published, tmp_path / "home")
    with connect(home, must_exist=True) as warehouse:
        before = warehouse.con.execute("select count(*), max(event_ts) from raw.events").fetchone()
    run_demo(home)
    with connect(home, must_exist=True) as warehouse:
        assert warehouse.con.execute("select count(*), max(event_ts) from raw.events").fetchone() == before
    assert landed_events(home) == [] and not (home.home / SCRATCH_HOME).exists()
    assert (home.reports_dir / "experiments" / f"{DEMO_EXPERIMENT}.html").exists()
