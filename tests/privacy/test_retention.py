"""Retention (pipelines/privacy/retention.py): events older than the setting leave every store forget
reaches, newer ones stay, and the run is audited; 0 is off; the setting is range-checked."""

import gzip
import json
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.privacy.retention import purge_expired
from pipelines.settings import InvalidSettings, Settings
from pipelines.warehouse.connection import connect
from serving.config import load_settings
from serving.events import parse_event_ts
from tests.conftest import copy_home, run_recforge


def _spread(con) -> tuple[datetime, datetime, int]:
    first, last, n = con.execute("select min(event_ts), max(event_ts), count(*) from raw.events").fetchone()
    return first, last, n


def test_retention_purges_old_rows_everywhere_forget_reaches_and_keeps_newer_ones(built, tmp_path):
    with connect(built) as con:
        first, last, _ = _spread(con)
    middle = first + (last - first) / 2
    days = 3
    now = middle + timedelta(days=days)
    settings = copy_home(built, tmp_path / "home", retention_days=days)
    # Extra landing formats beside the simulator's JSONL: a gzip'd JSONL, a CSV and a Parquet file.
    extra = settings.landing_dir / "extra"
    extra.mkdir()
    old, new = (middle - timedelta(hours=1)).isoformat(), (middle + timedelta(hours=1)).isoformat()
    lines = [json.dumps({"event_id": f"x{n}", "user_id": "u1", "event_ts": ts}) for n, ts in ((1, old), (2, new))]
    (extra / "a.jsonl.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    (extra / "b.csv").write_text(f"event_id,user_id,event_ts\nx3,u1,{old}\nx4,u1,{new}\n")
    pq.write_table(pa.table({"event_id": ["x5", "x6"], "event_ts": [middle - timedelta(hours=1), middle + timedelta(
        hours=1)]}), extra / "c.parquet")  # fmt: skip
    (extra / "only-old.jsonl").write_text(lines[0] + "\n")

    result = purge_expired(settings, now=now)

    assert result.cutoff == middle and result.rows_removed > 0
    with connect(settings) as con:
        for table in (
            "raw.events",
            "staging.stg_events",
            "intermediate.int_events_deduped",
            "marts.interaction_events",
        ):
            old_rows, new_rows = con.execute(
                f"select count(*) filter (where event_ts < ?), count(*) filter (where event_ts >= ?) from {table}",
                [middle, middle],
            ).fetchone()
            assert old_rows == 0 and new_rows > 0, table
        quarantine_old = con.execute(
            "select count(*) from quarantine.events where landing_date < ?", [middle.date()]
        ).fetchone()[0]
        balanced = con.execute(
            "select bool_and(rows_input = rows_accepted + rows_quarantined) from raw.batches"
        ).fetchone()[0]
        audit = con.execute("select cutoff, rows_removed from monitoring.retention_runs").fetchall()
    assert quarantine_old == 0 and balanced
    assert audit == [(middle.astimezone(audit[0][0].tzinfo), result.rows_removed)]
    assert [json.loads(x)["event_id"] for x in gzip.decompress((extra / "a.jsonl.gz").read_bytes()).splitlines()] == [
        "x2"
    ]
    assert (extra / "b.csv").read_text() == f"event_id,user_id,event_ts\nx4,u1,{new}\n"
    assert pq.read_table(extra / "c.parquet").column("event_id").to_pylist() == ["x6"]
    assert not (extra / "only-old.jsonl").exists()
    landing = [
        line for path in (settings.landing_dir / "events").rglob("*.jsonl") for line in path.read_text().splitlines()
    ]
    instants = [_instant(line) for line in landing]
    assert not any(at is not None and at < middle for at in instants) and any(at is not None for at in instants)
    assert (settings.reports_dir / "privacy" / f"retention-{result.run_id}.json").exists()


def _instant(line: str) -> datetime | None:
    """A landing line's event time as ingest reads it (None: no readable time; the simulator writes such rows)."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    value = event.get("event_ts") if isinstance(event, dict) else None
    return parse_event_ts(value) if isinstance(value, str) else None


def test_retention_zero_is_off_and_touches_nothing(built, tmp_path):
    settings = copy_home(built, tmp_path / "home")
    with connect(settings) as con:
        before = _spread(con)
    result = purge_expired(settings, now=datetime(2100, 1, 1, tzinfo=UTC))
    assert result.cutoff is None and result.stores == [] and "off" in result.summary()
    with connect(settings) as con:
        assert _spread(con) == before


@pytest.mark.parametrize("value", ["-1", "36501", "ten"])
def test_an_out_of_range_retention_is_one_settings_line(value, monkeypatch):
    monkeypatch.setenv("RECFORGE_RETENTION_DAYS", value)
    with pytest.raises(InvalidSettings, match=r"^invalid setting: RECFORGE_RETENTION_DAYS=.*in \[0, 36500\]"):
        load_settings(Settings)


def test_the_cli_refuses_an_out_of_range_days_in_one_line(tmp_path):
    done = run_recforge(tmp_path / "home", "retention", "--days", "-5")
    assert done.returncode != 0
    assert "RECFORGE_RETENTION_DAYS" in done.stderr.strip().splitlines()[-1]
