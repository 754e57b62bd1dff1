"""Forgetting reaches served slates: accepted impression rows and quarantined slates that name the user,
with the impression batches' counts still adding up."""

from __future__ import annotations

from datetime import timedelta

from pipelines.ingest import ingest_interval
from pipelines.privacy.forget import forget_users
from pipelines.warehouse.connection import connect
from tests.conftest import copy_home, whole_log
from tests.ingest.test_impressions_ingest import slate, write_impressions
from tests.privacy.test_forget import published_user


def test_forgetting_removes_the_users_served_slates_and_quarantined_slates_and_keeps_the_counts(published, tmp_path):
    settings = copy_home(published, tmp_path / "home")
    user, other = published_user(settings, 7), published_user(settings, 8)
    start, _ = whole_log(settings)
    day = start + timedelta(days=1)
    served = day + timedelta(hours=9)
    write_impressions(
        settings.home,
        [
            slate("f1", ["i000001", "i000002"], user_id=user, served_at=served),
            slate("f2", ["i000003"], user_id=user, served_at=served),
            slate("f3", ["i000001", "i000002"], user_id=user, served_at=served, scores=[0.5]),  # quarantined
            slate("k1", ["i000004", "i000005"], user_id=other, served_at=served),
        ],
        day=day,
    )
    ingest_interval(settings, day, day + timedelta(days=1))
    with connect(settings) as con:
        assert con.execute("select count(*) from raw.impression_items where user_id = ?", [user]).fetchone()[0] == 3
        assert con.execute("select count(*) from quarantine.impressions where strpos(raw, ?) > 0", [user]).fetchone()[0]

    result = forget_users(settings, [user])

    removed = {o.store: o.rows_removed for o in result.stores}
    assert removed["quarantine"] >= 1
    with connect(settings) as con:
        assert con.execute("select count(*) from raw.impression_items where user_id = ?", [user]).fetchone()[0] == 0
        assert (
            con.execute("select count(*) from quarantine.impressions where strpos(raw, ?) > 0", [user]).fetchone()[0]
            == 0
        )
        assert con.execute("select count(*) from raw.impression_items where user_id = ?", [other]).fetchone()[0] == 2
        bad = con.execute(
            "select count(*) from raw.batches where rows_input <> rows_accepted + rows_quarantined"
        ).fetchone()
    assert bad[0] == 0
    assert result.verified is True and result.remaining == []
