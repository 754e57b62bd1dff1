"""Consent for personalisation (serving/events.py, CONSENT_PATH): withheld -> out of the marts, counted."""

import json

from pipelines.monitoring.status import status_lines
from pipelines.validation.checkpoints import validate_marts
from pipelines.warehouse.connection import connect
from pipelines.warehouse.transform import build_warehouse
from tests.conftest import copy_home


def _signal(con, user_id: str, consent: bool, at: str) -> None:
    """One more event of `user_id` carrying a consent signal (an extra view of an item they know)."""
    con.execute(
        "insert into raw.events select * replace (? as event_id, cast(? as timestamptz) as event_ts, "
        "cast(? as json) as context, cast(cast(? as timestamptz) as date) as event_date, "
        "now() as ingested_at, 'consent-batch' as batch_id) "
        "from raw.events where user_id = ? limit 1",
        [f"consent-{user_id}-{at}", at, json.dumps({"consent": {"personalization": consent}}), at, user_id],
    )


def _active_users(con, n: int) -> list[str]:
    return [
        u
        for (u,) in con.execute(
            "select user_id from marts.user_features order by n_events desc, user_id limit ?", [n]
        ).fetchall()
    ]


def test_a_user_who_withheld_consent_is_kept_out_of_the_marts_and_counted(built, tmp_path):
    settings = copy_home(built, tmp_path / "home")
    with connect(settings) as con:
        withheld, regiven = _active_users(con, 2)
        first = con.execute("select min(event_ts) from raw.events").fetchone()[0]
        n_withheld = con.execute("select count(*) from raw.events where user_id = ?", [withheld]).fetchone()[0]
        _signal(con, withheld, False, str(first))
        _signal(con, regiven, False, str(first))
        _signal(con, regiven, True, "2000-01-01 00:00:00+00")  # older than the refusal: the refusal stands
    build_warehouse(settings)
    with connect(settings) as con:
        accounted = con.execute(
            "select user_id, n_events_excluded from marts.consent_withheld_users order by user_id"
        ).fetchall()
        in_marts = con.execute(
            "select count(*) from marts.interaction_events where user_id in (?, ?)", [withheld, regiven]
        ).fetchone()[0]
        in_features = con.execute(
            "select count(*) from marts.user_features where user_id in (?, ?)", [withheld, regiven]
        ).fetchone()[0]
    assert set(dict(accounted)) == {withheld, regiven}
    assert dict(accounted)[withheld] == n_withheld + 1  # every event of theirs, the signal's own included
    assert (in_marts, in_features) == (0, 0)
    excluded = sum(n for _, n in accounted)
    note = f"consent withheld: 2 user(s), {excluded} event(s) kept out of the marts"
    assert note in validate_marts(settings).summary()
    assert any(note in line for line in status_lines(settings))


def test_consent_given_again_later_brings_the_user_back(built, tmp_path):
    settings = copy_home(built, tmp_path / "home")
    with connect(settings) as con:
        (user,) = _active_users(con, 1)
        last = con.execute("select max(event_ts) from raw.events").fetchone()[0]
        _signal(con, user, False, "2000-01-01 00:00:00+00")
        _signal(con, user, True, str(last))
    build_warehouse(settings)
    with connect(settings) as con:
        accounted = con.execute("select count(*) from marts.consent_withheld_users").fetchone()[0]
        in_marts = con.execute("select count(*) from marts.interaction_events where user_id = ?", [user]).fetchone()[0]
    assert accounted == 0 and in_marts > 0
