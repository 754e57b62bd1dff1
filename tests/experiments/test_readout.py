"""The readout over the warehouse: DuckDB aggregates a slate-item table per user and day, the statistics
match those computed on the same traffic directly, and the CLI starts, lists, reads out and stops."""

from __future__ import annotations

from datetime import timedelta

import duckdb
import numpy as np
import pytest

from pipelines.experiments.contract import SLATE_ITEM_COLUMNS, SLATE_ITEMS_RELATION
from pipelines.experiments.declaration import get_experiment
from pipelines.experiments.readout import ReadoutBlocked, compute_readout, run_readout
from pipelines.experiments.stats import SHIP, STOP, analyse
from pipelines.experiments.synthetic import pre_period_rows, slate_item_rows, synthetic_traffic
from tests.conftest import run_recforge
from tests.experiments.conftest import declaration, write_declarations

DAYS = 7


def log_traffic(settings, experiment, traffic, extra_variants=()):
    """Write `traffic` into the warehouse as marts.slate_items (cast to the contract's types), plus
    pre-period events in marts.interaction_events and rows under `extra_variants` (shadow, stray)."""
    slate = slate_item_rows(traffic, experiment.name, experiment.start)
    pre = pre_period_rows(traffic)
    select = ", ".join(f"cast({c} as {t}) as {c}" for c, t in SLATE_ITEM_COLUMNS.items())
    with duckdb.connect(str(settings.warehouse_path)) as con:
        con.register("slate", slate)
        con.register("pre", pre)
        con.execute("create schema if not exists marts")
        con.execute(f"create or replace table {SLATE_ITEMS_RELATION} as select {select} from slate")
        for variant in extra_variants:
            con.execute(
                f"insert into {SLATE_ITEMS_RELATION} select * replace ('{variant}' as variant) "
                f"from {SLATE_ITEMS_RELATION} where variant = ? limit 500",
                [experiment.control],
            )
        con.execute(
            "create or replace table marts.interaction_events as "
            "select user_id, cast(? as timestamptz) as event_ts from pre, range(cast(pre.pre as bigint))",
            [experiment.start - timedelta(days=1)],
        )


@pytest.fixture
def logged(declared):
    experiment = get_experiment(declared, "home-ab")
    traffic = synthetic_traffic(experiment, 3000, DAYS, seed=1, lifts={"challenger": 1.3})
    log_traffic(declared, experiment, traffic, extra_variants=("shadowed", "mystery"))
    return declared, experiment, traffic


def test_the_warehouse_readout_equals_the_statistics_on_the_same_traffic(logged):
    settings, experiment, traffic = logged
    with duckdb.connect(str(settings.warehouse_path)) as con:
        readout = compute_readout(con, experiment, settings, experiment.end)
    direct = analyse(
        traffic.days, traffic.arms, dict(experiment.shares_at()), "control", ["challenger"],
        ["ctr", "conversion", "revenue_per_impression"], "ctr", [("conversion", 0.05)],
    )  # fmt: skip
    got = readout.analysis
    assert [(a.arm, a.users, a.impressions) for a in got.arms] == [(a.arm, a.users, a.impressions) for a in direct.arms]
    for mine, theirs in zip(got.comparisons, direct.comparisons, strict=True):
        assert (mine.arm, mine.metric) == (theirs.arm, theirs.metric)
        assert mine.delta == pytest.approx(theirs.delta, rel=1e-6, abs=1e-12)
        assert mine.p_value == pytest.approx(theirs.p_value, rel=1e-6, abs=1e-300)
    assert got.looks == DAYS
    assert got.decision == SHIP and got.reasons[0] == "ship challenger"
    assert any("mystery (500)" in n for n in readout.notes)  # a stray variant is named ...
    assert not any("shadowed" in n for n in readout.notes)  # ... a shadow variant is expected, and left out
    assert any(n.startswith("CUPED on each user's events") for n in readout.notes)


def test_the_readout_reads_only_up_to_its_time(logged):
    settings, experiment, _ = logged
    with duckdb.connect(str(settings.warehouse_path)) as con:
        early = compute_readout(con, experiment, settings, experiment.start + timedelta(days=2))
    assert early.analysis.looks == 2


def test_a_missing_slate_item_mart_is_named(declared):
    experiment = get_experiment(declared, "home-ab")
    with duckdb.connect(str(declared.warehouse_path)) as con, pytest.raises(LookupError, match="marts.slate_items"):
        compute_readout(con, experiment, declared, experiment.end)


def test_run_readout_writes_the_page_and_the_index_links_it(logged):
    settings, experiment, _ = logged
    readout, page = run_readout(settings, "home-ab", experiment.end)
    assert page == settings.reports_dir / "experiments" / "home-ab.html"
    text = page.read_text()
    assert "Decision: <span class='ok'>ship</span>" in text and "data:image/png;base64," in text
    assert "http://" not in text and "https://" not in text  # offline
    assert "experiments/home-ab.html" in (settings.reports_dir / "index.html").read_text()


def test_a_skewed_log_blocks_the_readout_and_its_page_says_why(declared):
    experiment = get_experiment(declared, "home-ab")
    traffic = synthetic_traffic(experiment, 8000, DAYS, seed=2, skew={"challenger": 0.15})
    log_traffic(declared, experiment, traffic)
    with pytest.raises(ReadoutBlocked, match="^sample ratio mismatch"):
        run_readout(declared, "home-ab", experiment.end)
    record = (declared.reports_dir / "experiments" / "home-ab.json").read_text()
    assert '"blocked": true' in record and f'"decision": "{STOP}"' in record
    page = (declared.reports_dir / "experiments" / "home-ab.html").read_text()
    assert "effects withheld" in page and "decision not tagged in MLflow: the readout is blocked" in page


def test_the_cli_starts_lists_reads_out_and_stops(logged, monkeypatch, capsys):
    """Through pipelines.cli.main in this process (the readout once more as the installed command below)."""
    from pipelines.cli import main

    settings, experiment, _ = logged
    monkeypatch.setenv("RECFORGE_HOME", str(settings.home))
    monkeypatch.setenv("RECFORGE_EXPERIMENTS_DIR", str(settings.experiments_dir))
    # Variants by registry version (aliases would ask this test's empty MLflow registry at start).
    by_version = [
        {"name": "control", "version": "3", "share": 0.45},
        {"name": "challenger", "version": "4", "share": 0.45},
    ]
    write_declarations(settings.home_experiments_dir, declaration(variants=by_version))

    def recforge(*args) -> tuple[int, str, str]:
        status = main(["experiments", *args])
        out = capsys.readouterr()
        return status, out.out, out.err

    status, out, _ = recforge("start", "home-ab")
    assert status == 0 and "experiment home-ab running: control 45%, challenger 45%, holdback 10%" in out
    status, _, err = recforge("start", "home-ab")
    assert status == 1
    assert err.strip().splitlines()[-1].startswith("recforge experiments: error: experiment 'home-ab' is already")
    _, out, _ = recforge("status")
    assert "home-ab: running, 2026-12-01 to 2026-12-15" in out and "last readout: none" in out
    status, out, err = recforge("readout", "home-ab", "--as-of", "2026-12-20")
    assert status == 0, err
    assert "SHIP - ship challenger" in out
    assert "last readout: ship (2026-12-20 00:00 UTC)" in recforge("status")[1]
    assert recforge("stop", "home-ab")[0] == 0
    assert "home-ab: stopped" in recforge("status")[1]
    status, _, err = recforge("stop", "home-ab")
    assert status == 1 and "is not running (stopped)" in err
    status, _, err = recforge("readout", "nope")
    assert status == 1
    assert err.strip().splitlines()[-1] == (
        "recforge experiments: error: no experiment named 'nope' is declared (declared: home-ab)"
    )


def test_the_installed_command_reads_out(logged):
    from tests.conftest import TINY

    settings, _, _ = logged
    done = run_recforge(
        settings.home, "experiments", "readout", "home-ab", "--as-of", "2026-12-20",
        values={**TINY, "experiments_dir": str(settings.experiments_dir)}, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "read out at 2026-12-20 00:00 UTC over 7 daily looks" in done.stdout


def test_the_repository_declarations_are_valid():
    """experiments/ under version control holds only valid declarations (the example included)."""
    from pipelines.experiments.declaration import load_experiments
    from pipelines.settings import Settings

    experiments = load_experiments(Settings(home="/nonexistent-home"))
    assert experiments and all(np.isclose(sum(s for _, s in e.shares_at()), 1) for e in experiments.values())


def test_the_daily_readout_reads_running_experiments_only(logged):
    """What recforge_experiment_readout calls: declared-but-not-running experiments are left alone."""
    from datetime import datetime

    from pipelines.experiments.daily import read_out_running
    from pipelines.experiments.state import start_experiment
    from tests.experiments.conftest import registry_version

    settings, experiment, _ = logged
    assert read_out_running(settings, experiment.end) == {}
    start_experiment(
        settings,
        "home-ab",
        now=datetime(2026, 12, 1, tzinfo=experiment.start.tzinfo),
        registry_version=registry_version,
    )
    assert read_out_running(settings, experiment.start - timedelta(days=1)) == {"home-ab": "not started"}
    assert read_out_running(settings, experiment.end) == {"home-ab": SHIP}
    assert (settings.reports_dir / "experiments" / "home-ab.html").exists()


def test_the_daily_readout_fails_naming_a_blocked_experiment(declared):
    from datetime import datetime

    from pipelines.experiments.daily import read_out_running
    from pipelines.experiments.state import start_experiment
    from tests.experiments.conftest import registry_version

    experiment = get_experiment(declared, "home-ab")
    log_traffic(declared, experiment, synthetic_traffic(experiment, 8000, DAYS, seed=2, skew={"challenger": 0.15}))
    start_experiment(
        declared,
        "home-ab",
        now=datetime(2026, 12, 1, tzinfo=experiment.start.tzinfo),
        registry_version=registry_version,
    )
    with pytest.raises(ReadoutBlocked, match="^home-ab: sample ratio mismatch"):
        read_out_running(declared, experiment.end)


def test_the_readout_page_renders_offline(logged, chromium, tmp_path):
    """Headless Chromium with the network off draws the page (embedded plots, no external resource)."""
    from PIL import Image

    from tests.conftest import screenshot

    settings, experiment, _ = logged
    _, page = run_readout(settings, "home-ab", experiment.end)
    picture = tmp_path / "readout.png"
    shot = screenshot(chromium, page.as_uri(), picture, window="1200,2400")
    assert shot.returncode == 0 and picture.exists(), shot.stderr[-2000:]
    image = Image.open(picture).convert("L")
    # The plots fill the lower half: far from a blank page.
    lower = image.crop((0, 1200, 1200, 2000))
    assert len(set(lower.getdata())) > 20


def test_a_canary_expects_the_shares_in_force_at_each_users_first_impression():
    """Users first seen while the canary had 5% are expected at 5%, those seen after the ramp at 45%."""
    from datetime import datetime
    from pathlib import Path

    from pipelines.experiments.declaration import parse_experiment
    from pipelines.experiments.readout import _expected_shares
    from tests.experiments.conftest import declaration

    experiment = parse_experiment(
        declaration(canary={"variant": "challenger", "schedule": [{"at": "2026-12-01", "share": 0.05},
                                                                  {"at": "2026-12-04", "share": 0.45}]}),
        Path("canary.yaml"), 0,
    )  # fmt: skip
    early, late = (
        datetime(2026, 12, 2, tzinfo=experiment.start.tzinfo),
        datetime(2026, 12, 5, tzinfo=experiment.start.tzinfo),
    )
    # users 0-99 first seen early (user 0 again later), users 100-199 late
    user = np.array([*range(200), 0])
    first = np.array([early.timestamp()] * 100 + [late.timestamp()] * 100 + [late.timestamp()])
    expected = _expected_shares(experiment, user, first, 200)
    assert expected == pytest.approx({"challenger": 5 + 45, "control": 85 + 45, "holdback": 20})


def test_an_experiment_without_impressions_yet_keeps_running(declared):
    experiment = get_experiment(declared, "home-ab")
    select = ", ".join(f"cast(null as {t}) as {c}" for c, t in SLATE_ITEM_COLUMNS.items())
    with duckdb.connect(str(declared.warehouse_path)) as con:
        con.execute("create schema marts")
        con.execute(f"create table {SLATE_ITEMS_RELATION} as select {select} where false")
    readout, _ = run_readout(declared, "home-ab", experiment.start + timedelta(hours=1))
    assert readout.decision == "keep running"
    assert readout.analysis.reasons == ["no impressions yet for control, challenger, holdback"]
    assert "no CUPED: marts.interaction_events does not exist" in readout.notes


def test_the_decision_is_tagged_on_each_variants_model_version(logged, tmp_path):
    """Aliases resolve to registered versions (a real MLflow registry in the home); the winner is marked;
    a variant whose alias is not set is named in the notes, never guessed."""
    from pipelines.training.tracking import configure

    settings, experiment, _ = logged
    client = configure(settings)
    name = settings.registered_model_name
    client.create_registered_model(name)
    readout, _ = run_readout(settings, "home-ab", experiment.end)
    assert "control not tagged in MLflow: alias champion is not set" in readout.notes
    assert "challenger not tagged in MLflow: alias challenger is not set" in readout.notes

    for _ in range(2):
        client.create_model_version(name, source=str(tmp_path))
    client.set_registered_model_alias(name, "champion", "1")
    client.set_registered_model_alias(name, "challenger", "2")
    readout, _ = run_readout(settings, "home-ab", experiment.end)
    assert readout.decision == SHIP and not any("not tagged" in n for n in readout.notes)
    tags = {v: client.get_model_version(name, v).tags for v in ("1", "2")}
    assert tags["1"]["experiment.home-ab.decision"] == tags["2"]["experiment.home-ab.decision"] == SHIP
    assert (tags["1"]["experiment.home-ab.role"], tags["2"]["experiment.home-ab.role"]) == ("control", "winner")
    assert tags["2"]["experiment.home-ab.read_out_at"] == experiment.end.isoformat(timespec="seconds")


def test_a_publication_variant_resolves_through_its_manifest(settings):
    """A variant named by publication version takes the model version its manifest records."""
    import json

    from pipelines.experiments.declaration import Variant
    from pipelines.experiments.registry_tags import _model_version

    published = settings.published_dir / "20261201T000000000000Z-v7"
    published.mkdir(parents=True)
    (published / "manifest.json").write_text(json.dumps({"model": {"version": "7"}}))
    assert _model_version(None, settings, Variant("b", 0.5, version=published.name)) == ("7", "")
    missing, why = _model_version(None, settings, Variant("c", 0.5, version="20261202T000000000000Z-v8"))
    assert missing is None and why.startswith("publication 20261202T000000000000Z-v8 unreadable")


def test_one_variant_against_a_holdback_is_read_against_the_holdback(declared):
    """The recommender's value over the popularity fallback: the variant is the challenger, the holdback
    the reference."""
    from tests.experiments.conftest import declaration, write_declarations

    lone = declaration(shadow=None, holdback=0.2, variants=[{"name": "recommender", "alias": "champion", "share": 0.8}])
    write_declarations(declared.home_experiments_dir, lone)
    experiment = get_experiment(declared, "home-ab")
    log_traffic(declared, experiment, synthetic_traffic(experiment, 6000, DAYS, seed=9, lifts={"holdback": 0.6}))
    with duckdb.connect(str(declared.warehouse_path)) as con:
        analysis = compute_readout(con, experiment, declared, experiment.end).analysis
    assert analysis.reference == "holdback"
    assert analysis.decision == SHIP and analysis.reasons[0] == "ship recommender"
