"""Drift: a quiet period does not ask for retraining; a wave of new items does."""

from datetime import timedelta

import numpy as np
import pytest

from pipelines.ingest import ingest_interval
from pipelines.monitoring.drift import check_drift
from pipelines.monitoring.drift_measures import activity_bin_labels, js_divergence, psi
from pipelines.simulate import simulate
from pipelines.warehouse.connection import connect
from pipelines.warehouse.transform import build_warehouse
from tests.conftest import make_settings, whole_log

SMALL = {"sim_users": 300, "sim_items": 160, "sim_days": 21, "sim_shift_day": 14, "sim_bot_users": 0}


def two_checks(home, shift: str):
    """Baseline at day 14, then the check at day 21, as two weekly runs of the pipeline would do."""
    settings = make_settings(home, sim_shift=shift, **SMALL)
    simulate(settings)
    start, end = whole_log(settings)
    week_two = start + timedelta(days=14)
    ingest_interval(settings, start, week_two)
    build_warehouse(settings)
    first = check_drift(settings)
    ingest_interval(settings, week_two, end)
    build_warehouse(settings)  # incremental: only the new week's batches are processed
    second = check_drift(settings)
    return settings, first, second


@pytest.fixture(scope="module")
def quiet(tmp_path_factory):
    return two_checks(tmp_path_factory.mktemp("quiet") / "home", "none")


@pytest.fixture(scope="module")
def shifted(tmp_path_factory):
    return two_checks(tmp_path_factory.mktemp("shifted") / "home", "new_items")


def test_the_first_check_has_no_baseline_and_asks_for_a_first_model(quiet):
    _, first, _ = quiet
    assert not first.has_baseline and first.retrain and "no baseline" in first.reason


def test_a_quiet_period_does_not_trigger_training(quiet):
    _, _, second = quiet
    assert second.has_baseline
    assert not second.retrain, second.summary()


def test_a_wave_of_new_items_triggers_training(shifted):
    _, _, second = shifted
    assert second.retrain, second.summary()
    drifted = {m.name for m in second.measures if m.drifted}
    assert {"new_item_share", "item_popularity"} <= drifted


def test_each_check_is_stored_with_its_measures_and_report(shifted):
    settings, first, second = shifted
    with connect(settings) as con:
        rows = con.execute(
            "select measure, value, threshold, drifted, retrain_triggered, report from monitoring.drift_results "
            "where checked_at = ? order by measure",
            [second.checked_at],
        ).fetchall()
    assert [r[0] for r in rows] == sorted(m.name for m in second.measures)
    assert all(r[4] for r in rows)
    report = settings.reports_dir / "drift" / "latest.html"
    assert report.exists() and "retraining triggered" in report.read_text()
    assert "data:image/png;base64" in report.read_text()


def test_retraining_moves_the_baseline_to_the_window_that_triggered_it(shifted):
    settings, _, second = shifted
    with connect(settings) as con:
        window_end = con.execute("select max(window_end) from monitoring.drift_baseline").fetchone()[0]
    assert abs(window_end.timestamp() - second.window_end.timestamp()) < 1


def test_divergences_are_zero_for_identical_and_large_for_disjoint_distributions():
    p = np.array([0.5, 0.3, 0.2, 0.0])
    assert js_divergence(p, p) == pytest.approx(0.0)
    assert js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)
    assert psi(p, p) == pytest.approx(0.0)
    assert psi(np.array([0.9, 0.1]), np.array([0.1, 0.9])) > 1.0


def test_activity_bins_read_as_ranges_of_events_per_user():
    assert activity_bin_labels() == ["1", "2", "3-4", "5-8", "9-16", "17-32", "33-64", "65+"]
