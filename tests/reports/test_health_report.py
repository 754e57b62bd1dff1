"""The weekly health report: trends by week, anomalies first in plain words, readable offline."""

import re
import shutil

import pandas as pd

from pipelines.operations.failures import failure_log_dir
from pipelines.operations.health import measure
from pipelines.reports.health_report import anomalies, write_health_report
from serving.failures import FILE_NAME, Reason
from tests.conftest import copy_home, make_settings, screenshot
from tests.operations.test_failures import RECS, at, write_log


def write_failures(settings) -> None:
    """Two weeks of serving's failure log: fallbacks and bad k in the first, fallbacks and an unknown item after."""
    entries = [(at("2026-03-02", h), RECS, 200, Reason.UNKNOWN_USER, "v1", f"u{h}") for h in range(3)]
    entries += [(at("2026-03-03", h), RECS, 422, Reason.INVALID_K, "v1", "u1") for h in range(2)]
    entries += [(at("2026-03-10"), RECS, 200, Reason.UNKNOWN_USER, "v1", "u7")]
    entries += [(at("2026-03-11"), "/v1/items/{item_id}/similar", 404, Reason.UNKNOWN_ITEM, "v1", None, "i9")]
    shutil.rmtree(failure_log_dir(settings), ignore_errors=True)  # only these, whatever the fixture's home holds
    write_log(failure_log_dir(settings) / FILE_NAME, entries)


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
    write_failures(settings)
    measure(settings, "weekly")
    report = write_health_report(settings)
    text = report.read_text()
    for section in (
        "Events in and quarantined",
        "Validation",
        "Drift",
        "Champion and its offline metrics",
        "coverage and diversity",
        "Serving",
        "Failed requests and fallbacks",
        "Online experiments",
    ):
        assert section in text, section
    assert re.search(r"<h2 class='(ok|bad)'>", text)  # the verdict comes first
    assert "http://" not in text and "https://" not in text  # nothing fetched from the network
    assert len(re.findall(r"<img alt='[^']+' src='data:image/png;base64,", text)) >= 3
    assert "href='health/weekly.html'" in (settings.reports_dir / "index.html").read_text()
    picture = tmp_path / "weekly-health.png"
    shot = screenshot(chromium, report.as_uri(), picture, window="1200,2400")
    assert shot.returncode == 0 and picture.stat().st_size > 30_000, shot.stderr[-2000:]


def test_the_report_counts_failed_requests_by_reason_per_week(published, tmp_path):
    settings = copy_home(published, tmp_path / "home")
    write_failures(settings)
    text = write_health_report(settings).read_text()
    section = text[text.index("Failed requests and fallbacks") : text.index("Online experiments")]
    head = re.search(r"<tr>(.*?)</tr>", section).group(1)
    assert re.findall(r"<th>([^<]*)</th>", head) == ["week", "unknown_user", "unknown_item", "invalid_k", "all"]
    rows = [re.findall(r"<td>([^<]*)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", section)[1:]]
    assert rows == [["2026-03-02", "3", "0", "2", "5"], ["2026-03-09", "1", "1", "0", "2"]]


def test_the_report_says_when_nothing_was_logged(published, tmp_path):
    settings = copy_home(published, tmp_path / "home")
    shutil.rmtree(failure_log_dir(settings), ignore_errors=True)
    text = write_health_report(settings).read_text()
    assert "No failed request or fallback logged" in text
