"""`recforge run` backfills the simulated log's landing days, not a day the demo A/B's traffic landed on
(the demo ingests that itself; a backfill from the log's first day to today would ask for every day between)."""

from datetime import date

import pytest

from pipelines.runtime.orchestrate import PipelineRunFailed, landing_days
from pipelines.traffic.run import TRAFFIC_FILE_PREFIX


def land(settings, day: str, name: str) -> None:
    folder = settings.landing_dir / "events" / f"date={day}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("{}\n")


def test_a_day_with_only_traffic_files_is_left_out_of_the_backfill(settings):
    land(settings, "2026-01-01", "events.jsonl")
    land(settings, "2026-01-02", "events.jsonl")
    land(settings, "2026-01-02", f"{TRAFFIC_FILE_PREFIX}a-seed7.jsonl")
    land(settings, "2026-12-03", f"{TRAFFIC_FILE_PREFIX}b-seed7.jsonl")
    assert landing_days(settings) == [date(2026, 1, 1), date(2026, 1, 2)]


def test_only_traffic_files_is_no_log_to_run_on(settings):
    land(settings, "2026-12-03", f"{TRAFFIC_FILE_PREFIX}b-seed7.jsonl")
    with pytest.raises(PipelineRunFailed, match="run `recforge simulate` first"):
        landing_days(settings)
