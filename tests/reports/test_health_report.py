"""The weekly health report: trends by week, anomalies first in plain words, readable offline."""

import re

import pandas as pd

from pipelines.operations.health import measure
from pipelines.reports.health_report import anomalies, write_health_report
from tests.conftest import copy_home, make_settings, screenshot


def test_a_week_beyond_its_recent_range_is_flagged_in_plain_words(tmp_path):
    settings = make_settings(tmp_path / "home", report_anomaly_weeks=3, report_anomaly_tolerance=0.25)
    weeks = ["2026-01-05", "2026-01-12", "2026-01-19", "2026-01-26"]
    (flagged,) = anomalies(pd.Series([0.05, 0.06, 0.055, 0.20], index=weeks), "quarantined share", settings)
    assert flagged.sentence() == (
        "quarantined share in the week of 2026-01-26 was 0.2, above its range of the previous weeks (0.05 to 0.06)."
    )
    assert anomalies(pd.Series([0.05, 0.06, 0.055, 0.07], index=weeks), "quarantined share", settings) == []
    assert anomalies(pd.Series([0.05, 0.5], index=weeks[:2]), "too short to judge", settings) == []
    (low,) = anomalies(pd.Series([100.0, 110, 105, 10], index=weeks), "accepted events", settings)
    assert "below its range" in low.sentence()


def test_the_report_renders_offline_with_its_plots_and_is_linked_from_the_index(published, tmp_path, chromium):
    settings = copy_home(published, tmp_path / "home")
    measure(settings, "weekly")
    report = write_health_report(settings)
    text = report.read_text()
    for section in ("Events in and quarantined", "Validation", "Drift", "Champion and its offline metrics",
                    "coverage and diversity", "Serving", "Online experiments"):  # fmt: skip
        assert section in text, section
    assert re.search(r"<h2 class='(ok|bad)'>", text)  # the verdict comes first
    assert "http://" not in text and "https://" not in text  # nothing fetched from the network
    assert len(re.findall(r"<img alt='[^']+' src='data:image/png;base64,", text)) >= 2
    assert "href='health/weekly.html'" in (settings.reports_dir / "index.html").read_text()
    picture = tmp_path / "weekly-health.png"
    shot = screenshot(chromium, report.as_uri(), picture, window="1200,2400")
    assert shot.returncode == 0 and picture.stat().st_size > 30_000, shot.stderr[-2000:]
