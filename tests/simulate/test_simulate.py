import json

import pytest

from pipelines.simulate import catalog_file, simulate
from tests.conftest import make_settings


def test_same_seed_gives_byte_identical_landing_files(tmp_path):
    first = make_settings(tmp_path / "a", sim_days=3)
    second = make_settings(tmp_path / "b", sim_days=3)
    simulate(first)
    simulate(second)
    for name in sorted(p.relative_to(first.landing_dir) for p in first.landing_dir.rglob("*.jsonl")):
        assert (first.landing_dir / name).read_bytes() == (second.landing_dir / name).read_bytes()


def test_different_seed_gives_a_different_log(tmp_path):
    first = make_settings(tmp_path / "a", sim_days=2)
    second = make_settings(tmp_path / "b", sim_days=2, sim_seed=7)
    simulate(first)
    simulate(second)
    path = "events/date=2026-01-01/events.jsonl"
    assert (first.landing_dir / path).read_text() != (second.landing_dir / path).read_text()


def test_one_landing_file_per_day_and_a_catalog(simulated):
    files = sorted((simulated.landing_dir / "events").glob("date=*/events.jsonl"))
    assert len(files) == simulated.sim_days
    items = [json.loads(line) for line in catalog_file(simulated.landing_dir).read_text().splitlines()]
    assert len(items) == simulated.sim_items
    assert {"item_id", "category", "price", "in_stock", "is_blocked", "created_at"} <= set(items[0])
    assert any(item["is_blocked"] for item in items) or simulated.sim_items < 100
    assert any(not item["in_stock"] for item in items)


def test_funnel_narrows_from_views_to_purchases(simulated):
    from pipelines.simulate import FUNNEL

    assert FUNNEL == ("view", "click", "add_to_cart", "purchase")  # taken from the event contract, in this order
    truth = json.loads((simulated.landing_dir / "simulation.json").read_text())
    by_type = truth["events_by_type"]
    assert by_type["view"] > by_type["click"] > by_type["add_to_cart"] > by_type["purchase"] > 0


def test_injected_defects_are_recorded_with_their_counts(simulated):
    truth = json.loads((simulated.landing_dir / "simulation.json").read_text())
    assert truth["duplicates_injected"] > 0
    assert truth["retry_duplicates_injected"] > 0
    assert truth["late_events"] > 0
    assert sum(truth["malformed_injected"].values()) > 0
    assert len(truth["bot_user_ids"]) == simulated.sim_bot_users
    assert truth["events_written"] == (
        truth["clean_events"]
        + truth["duplicates_injected"]
        + truth["retry_duplicates_injected"]
        + sum(truth["malformed_injected"].values())
    )


def test_late_events_are_delivered_two_days_after_they_happened(simulated):
    truth = json.loads((simulated.landing_dir / "simulation.json").read_text())
    late = 0
    for file in truth["files"]:
        landing_day = file.split("date=")[1][:10]
        for line in (simulated.landing_dir / file).read_text().splitlines():
            try:
                event = json.loads(line)
                late += event["event_ts"][:10] < landing_day
            except (ValueError, KeyError, TypeError):
                continue  # the injected malformed rows
    assert late == truth["late_events"]


def test_popularity_is_long_tailed(simulated):
    from collections import Counter

    counts = Counter()
    for path in (simulated.landing_dir / "events").glob("date=*/events.jsonl"):
        for line in path.read_text().splitlines():
            try:
                counts[json.loads(line)["item_id"]] += 1
            except (ValueError, KeyError):
                continue
    ranked = [n for _, n in counts.most_common()]
    top_decile = sum(ranked[: max(1, len(ranked) // 10)])
    assert top_decile / sum(ranked) > 0.25  # a uniform catalog would give 0.10


def test_every_item_has_a_seller_drawn_from_the_seed_without_changing_the_events(tmp_path):
    """Sellers come from their own random stream: same seed, same sellers; a few sellers hold much of the catalog."""
    settings = make_settings(tmp_path / "a", sim_days=1)
    simulate(settings)
    items = [json.loads(line) for line in catalog_file(settings.landing_dir).read_text().splitlines()]
    sellers = [item["attributes"]["seller"] for item in items]
    assert all(s.startswith("seller_") for s in sellers)
    counts = sorted((sellers.count(s) for s in set(sellers)), reverse=True)
    assert 1 < len(counts) <= settings.sim_items // 20 and counts[0] > 2 * counts[-1]
    again = make_settings(tmp_path / "b", sim_days=1)
    simulate(again)
    assert catalog_file(again.landing_dir).read_text() == catalog_file(settings.landing_dir).read_text()


def test_items_get_a_title_and_description_from_their_category_and_latent_traits(simulated):
    from pipelines.simulate import CATEGORY_NOUNS, TRAIT_WORDS

    items = [json.loads(line) for line in catalog_file(simulated.landing_dir).read_text().splitlines()]
    traits = {word for pair in TRAIT_WORDS for word in pair}
    by_category: dict[str, set[str]] = {}
    for item in items:
        description = item["attributes"]["description"]
        noun = next(n for n in CATEGORY_NOUNS if f" {n} " in f" {item['title']} ")
        assert f"{noun} from the {item['category']} range" in description
        assert item["title"].endswith(f" {int(item['item_id'][1:])}")
        by_category.setdefault(item["category"], set()).add(noun)
    assert all(len(nouns) == 1 for nouns in by_category.values())  # one product noun per category
    assert any(word in traits for item in items for word in item["attributes"]["description"].split())


def test_item_text_is_the_same_for_the_same_seed_and_differs_for_another(tmp_path):
    from pipelines.simulate import simulate

    plain = make_settings(tmp_path / "a", sim_days=2)
    simulate(plain)
    again = make_settings(tmp_path / "b", sim_days=2)
    simulate(again)
    assert catalog_file(plain.landing_dir).read_bytes() == catalog_file(again.landing_dir).read_bytes()
    other = make_settings(tmp_path / "c", sim_days=2, sim_seed=7)
    simulate(other)
    assert catalog_file(plain.landing_dir).read_text() != catalog_file(other.landing_dir).read_text()


def test_a_repeat_of_the_same_user_item_and_type_within_a_second_is_dropped_unless_a_bot_fired_it():
    import numpy as np

    from pipelines.simulate import COLUMNS, _drop_double_fires

    # (user, item, type, ms, bot): time-ordered, as a day's events are when the rule runs
    rows = [
        (1, 5, 0, 0, False), (1, 5, 0, 400, False),  # a repeat after 0.4 s: dropped
        (1, 5, 0, 1300, False),  # 0.9 s after the dropped one: the previous occurrence counts, dropped too
        (1, 5, 1, 1350, False),  # another type: kept
        (1, 5, 0, 2400, False),  # 1.1 s after the last: kept
        (2, 5, 0, 2500, True), (2, 5, 0, 3000, True),  # a bot's burst: kept
        (3, 6, 0, 3000, False), (3, 6, 0, 3999, False),  # 999 ms: dropped
    ]  # fmt: skip
    events = {name: np.zeros(len(rows), dtype=np.int64) for name in COLUMNS}
    events["value"], events["bot"] = np.full(len(rows), np.nan), np.array([r[4] for r in rows])
    for column, index in (("user", 0), ("item", 1), ("etype", 2), ("ts", 3)):
        events[column] = np.array([r[index] for r in rows], dtype=np.int64)
    events["number"] = np.arange(len(rows))
    kept = _drop_double_fires(events, n_items=10)
    assert kept["number"].tolist() == [0, 3, 4, 5, 6, 7]


def test_a_large_catalog_is_simulated_by_the_columns_engine_without_a_users_by_items_matrix(tmp_path):
    """40,000 users x 10,000 items: a dense affinity matrix alone would be 3 GiB; the run stays far below.

    In a fresh process with no RECFORGE_* variable (a whole-suite run's environment once gave this process
    860 MiB where it takes ~130 MiB alone; the bound leaves room for that and still fails a dense matrix)."""
    import os
    import subprocess
    import sys

    code = (
        "import resource, sys; from pathlib import Path; from pipelines.settings import Settings; "
        "from pipelines.simulate import simulate; "
        f"s = Settings(home=Path(r'{tmp_path}'), sim_users=40_000, sim_items=10_000, sim_days=1, sim_categories=10, "
        "sim_engine='columns'); "
        "s.ensure_dirs(); simulate(s); print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)"
    )
    environment = {name: value for name, value in os.environ.items() if not name.startswith("RECFORGE_")}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=environment)
    assert int(run.stdout.strip()) < 1_500, run.stdout  # MiB of peak RSS, interpreter and libraries included


# --- the `columns` engine (production sizes): same mechanics, its own log for a seed


@pytest.fixture(scope="module")
def columns_log(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("columns") / "home", sim_engine="columns")
    simulate(settings)
    return settings


def test_the_columns_engine_is_deterministic_and_differs_from_the_sessions_engine(columns_log, simulated, tmp_path):
    again = make_settings(tmp_path / "again", sim_engine="columns")
    simulate(again)
    path = "events/date=2026-01-03/events.jsonl"
    assert (again.landing_dir / path).read_bytes() == (columns_log.landing_dir / path).read_bytes()
    assert (again.landing_dir / path).read_bytes() != (simulated.landing_dir / path).read_bytes()


def test_the_columns_engine_keeps_the_funnel_the_long_tail_and_late_delivery(columns_log):
    truth = json.loads((columns_log.landing_dir / "simulation.json").read_text())
    by_type = truth["events_by_type"]
    assert by_type["view"] > by_type["click"] > by_type["add_to_cart"] > by_type["purchase"] > 0
    test_popularity_is_long_tailed(columns_log)
    test_late_events_are_delivered_two_days_after_they_happened(columns_log)
    test_injected_defects_are_recorded_with_their_counts(columns_log)


def test_ingesting_a_columns_log_quarantines_exactly_its_injected_defects(columns_log, tmp_path):
    from pipelines.ingest import ingest_interval
    from pipelines.warehouse.connection import connect
    from tests.conftest import copy_home, whole_log

    settings = copy_home(columns_log, tmp_path / "home")
    result = ingest_interval(settings, *whole_log(settings))
    truth = json.loads((settings.landing_dir / "simulation.json").read_text())
    assert result.rows_input == truth["events_written"] == result.rows_accepted + result.rows_quarantined
    with connect(settings) as con:
        by_reason = dict(con.execute("select reason, count(*) from quarantine.events group by reason").fetchall())
    malformed = dict(truth["malformed_injected"])
    expected = {"duplicate_event_id": truth["duplicates_injected"], "bot_suspected": truth["bot_events"],
                "retry_duplicate": truth["retry_duplicates_injected"], "malformed_json": malformed.pop("not_json"),
                **malformed}  # fmt: skip
    assert by_reason == {reason: n for reason, n in expected.items() if n}
