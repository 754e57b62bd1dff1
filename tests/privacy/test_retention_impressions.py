"""Retention reaches served slates too: landing impression files, accepted shown items, quarantined slates and
the slate mart lose what is older than the cutoff, newer slates stay, and the impression batches still add up."""

from __future__ import annotations

from datetime import timedelta

import pyarrow.parquet as pq

from pipelines.ingest import ingest_interval
from pipelines.privacy.forget import rebuild_in_child
from pipelines.privacy.retention import purge_expired
from pipelines.warehouse.connection import connect
from tests.conftest import copy_home, whole_log
from tests.ingest.test_impressions_ingest import slate, write_impressions


def test_retention_purges_old_served_slates_everywhere_and_keeps_newer_ones(built, tmp_path):
    settings = copy_home(built, tmp_path / "home", retention_days=3)
    start, _ = whole_log(settings)
    old_day, new_day = start + timedelta(days=2), start + timedelta(days=6)
    old_file = write_impressions(
        settings.home,
        [
            slate("o1", ["i000001", "i000002"], served_at=old_day + timedelta(hours=9)),
            slate("o2", ["i000003"], served_at=old_day + timedelta(hours=10), scores=[0.5, 0.1]),  # quarantined
        ],
        day=old_day,
    )
    new_file = write_impressions(
        settings.home,
        [
            slate("n1", ["i000004", "i000005"], served_at=new_day + timedelta(hours=9)),
            slate("n2", ["i000006"], served_at=new_day + timedelta(hours=10), scores=[0.5, 0.1]),  # quarantined
        ],
        day=new_day,
    )
    for day in (old_day, new_day):
        ingest_interval(settings, day, day + timedelta(days=1))
    rebuild_in_child(settings)  # dbt in a child: in-process dbt keeps the file open, and retention rewrites it
    with connect(settings) as con:
        assert con.execute("select count(*) from raw.impression_items").fetchone()[0] == 4
        assert con.execute("select count(*) from quarantine.impressions").fetchone()[0] == 2
        assert con.execute("select count(*) from marts.slate_items").fetchone()[0] == 4

    cutoff = start + timedelta(days=4)
    result = purge_expired(settings, now=cutoff + timedelta(days=3))

    assert result.cutoff == cutoff
    removed = {o.store: o.rows_removed for o in result.stores}
    assert removed["impressions"] == 2 and removed["quarantine"] >= 1
    with connect(settings) as con:
        kept = con.execute("select request_id, count(*) from raw.impression_items group by 1 order by 1").fetchall()
        quarantined = con.execute("select landing_date from quarantine.impressions").fetchall()
        mart = con.execute("select distinct request_id from marts.slate_items order by 1").fetchall()
        batches = con.execute(
            "select landing_date, rows_input, rows_accepted, rows_quarantined from raw.batches "
            "where source = 'impressions' order by 1"
        ).fetchall()
    assert kept == [("n1", 2)]
    assert quarantined == [(new_day.date(),)]
    assert mart == [("n1",)]
    # The old day's batch lost both its slates; the new day's is whole: accepted + quarantined = input in each.
    assert [(r[1], r[2], r[3]) for r in batches] == [(0, 0, 0), (2, 1, 1)]
    assert not old_file.exists()  # every slate in it was older than the cutoff: the file is gone
    assert pq.read_table(new_file).column("request_id").to_pylist() == ["n1", "n2"]
