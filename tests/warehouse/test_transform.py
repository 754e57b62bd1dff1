import json

import pytest

from pipelines.warehouse.connection import connect
from pipelines.warehouse.transform import TransformError, build_warehouse, run_dbt
from tests.conftest import copy_home


def test_marts_hold_every_accepted_event_of_a_person_exactly_once(built):
    with connect(built) as con:
        raw = con.execute(
            "select count(*) from raw.events where user_id not in (select user_id from intermediate.int_bot_users)"
        ).fetchone()[0]
        in_mart = con.execute("select sum(n_events) from marts.interactions").fetchone()[0]
        in_split = con.execute("select sum(n_events) from marts.interactions_split").fetchone()[0]
    assert raw == in_mart == in_split


def test_interaction_weights_rank_purchases_above_views(built):
    with connect(built) as con:
        bought, only_viewed = con.execute(
            """
            with kinds as (
                select user_id, item_id, bool_or(event_type = 'purchase') as bought,
                       bool_and(event_type = 'view') as only_viewed
                from staging.stg_events group by user_id, item_id
            )
            select avg(weight) filter (where bought), avg(weight) filter (where only_viewed)
            from marts.interactions join kinds using (user_id, item_id)
            """
        ).fetchone()
    assert bought > 5 * only_viewed


def test_split_is_ordered_in_time_with_no_look_ahead(built):
    with connect(built) as con:
        bounds = dict(
            con.execute(
                "select split, struct_pack(lo := min(first_ts), hi := max(last_ts)) "
                "from marts.interactions_split group by split"
            ).fetchall()
        )
    assert set(bounds) == {"train", "valid", "test"}
    assert bounds["train"]["hi"] < bounds["valid"]["lo"]
    assert bounds["valid"]["hi"] < bounds["test"]["lo"]


def test_a_failing_dbt_test_fails_the_build_naming_it(built, tmp_path):
    settings = copy_home(built, tmp_path / "home")
    with connect(settings) as con:
        con.execute(
            "insert into raw.events select * replace ('hover' as event_type, 'x-' || event_id as event_id) "
            "from raw.events limit 1"
        )
    with pytest.raises(TransformError, match="accepted_values_stg_events_event_type"):
        build_warehouse(settings)


def test_features_cover_every_item_and_user_of_the_interactions(built):
    with connect(built) as con:
        missing_items, missing_users = con.execute(
            """
            select
                (select count(distinct item_id) from marts.interactions
                 where item_id not in (select item_id from marts.item_features)),
                (select count(distinct user_id) from marts.interactions
                 where user_id not in (select user_id from marts.user_features))
            """
        ).fetchone()
        segments = dict(con.execute("select segment, count(*) from marts.user_features group by segment").fetchall())
        windows_ordered = con.execute(
            "select bool_and(events_1d <= events_7d and events_7d <= events_30d and events_30d <= events_total) "
            "from marts.item_features"
        ).fetchone()[0]
    assert (missing_items, missing_users) == (0, 0)
    assert set(segments) <= {"cold", "casual", "power"} and segments.get("cold", 0) > 0
    assert windows_ordered


def test_item_features_carry_the_catalogs_text_for_content_models(built):
    with connect(built) as con:
        rows = con.execute(
            "select item_id, title, description, attributes from marts.item_features where in_catalog order by item_id"
        ).fetchall()
    assert rows and all(title and description for _, title, description, _ in rows)
    item_id, title, description, attributes = rows[0]
    assert title.endswith(f" {int(item_id[1:])}") and " range: " in description
    assert json.loads(attributes)["description"] == description


def test_user_segments_follow_distinct_items_in_the_interactions_mart(built):
    with connect(built) as con:
        disagreements = con.execute(
            """
            with counted as (select user_id, count(*) as n_items from marts.interactions group by user_id)
            select count(*) from counted join marts.user_features using (user_id)
            where counted.n_items <> user_features.n_items
               or user_features.segment <> case when counted.n_items < 5 then 'cold'
                                                when counted.n_items <= 50 then 'casual' else 'power' end
            """
        ).fetchone()[0]
    assert disagreements == 0


def test_sessions_hold_every_event_once(built):
    with connect(built) as con:
        in_sessions, events = con.execute(
            "select (select sum(n_events) from intermediate.int_sessions), "
            "(select count(*) from intermediate.int_events_without_bots)"
        ).fetchone()
    assert in_sessions == events > 0


def test_an_incremental_build_after_rerunning_a_day_equals_a_full_refresh(built, tmp_path):
    from datetime import timedelta

    from pipelines.ingest import ingest_interval
    from tests.conftest import whole_log

    settings = copy_home(built, tmp_path / "home")
    start, _ = whole_log(settings)
    ingest_interval(settings, start + timedelta(days=3), start + timedelta(days=5))  # re-run two days
    build_warehouse(settings)  # incremental: only the replaced batches are reprocessed

    def fingerprint() -> tuple:
        with connect(settings) as con:
            return (
                con.execute(
                    "select count(*), sum(hash(event_id, batch_id, event_ts)) from intermediate.int_events_deduped"
                ).fetchone()
                + con.execute("select count(*), sum(weight) from marts.interactions").fetchone()
            )

    incremental = fingerprint()
    with connect(built) as con:
        assert incremental[0] == con.execute("select count(*) from intermediate.int_events_deduped").fetchone()[0]
    run_dbt(settings, ["build", "--full-refresh", "--select", "int_events_deduped+"])
    assert fingerprint() == pytest.approx(incremental)


def test_every_dbt_var_is_a_setting_whose_default_dbt_project_yml_repeats():
    """A bare `dbt build` (defaults from dbt_project.yml) builds what the pipeline builds with default settings."""
    import yaml

    from pipelines.settings import Settings
    from pipelines.warehouse.transform import DBT_VARS

    project = yaml.safe_load((Settings().dbt_project_dir / "dbt_project.yml").read_text())
    defaults = {name: field.default for name, field in Settings.model_fields.items() if name in DBT_VARS}
    assert project["vars"] == defaults and set(defaults) == set(DBT_VARS)


def test_a_weight_setting_changes_the_event_mart_and_what_is_built_from_it(built, tmp_path):
    from pipelines.training.data import read_event_log

    settings = copy_home(built, tmp_path / "home", weight_purchase=3 * built.weight_purchase)
    build_warehouse(settings)

    def purchases(home) -> tuple:
        with connect(home) as con:
            return con.execute(
                "select min(weight), max(weight), (select sum(weight) from marts.interactions where n_purchases > 0) "
                "from marts.interaction_events where event_type = 'purchase'"
            ).fetchone()

    low, high, total = purchases(settings)
    assert low == high == settings.weight_purchase
    assert total > purchases(built)[2]
    assert settings.weight_purchase in set(read_event_log(settings).weight)


def test_every_mart_states_its_grain_and_describes_every_column_it_has(built):
    """The marts are the interface: a reader learns each column's meaning from _marts.yml, not from the SQL."""
    import yaml

    documented = yaml.safe_load((built.dbt_project_dir / "models" / "marts" / "_marts.yml").read_text())["models"]
    with connect(built) as con:
        built_marts = {
            table: {row[0] for row in con.execute(f"describe marts.{table}").fetchall()}
            for (table,) in con.execute(
                "select table_name from information_schema.tables where table_schema = 'marts'"
            ).fetchall()
        }
    assert set(built_marts) == {model["name"] for model in documented}
    for model in documented:
        assert model["description"].startswith("One row per"), model["name"]
        described = {column["name"] for column in model["columns"] if column.get("description")}
        assert described == built_marts[model["name"]], model["name"]


def _add_events(con, user_id: str, batch_id: str, n: int, at: str, context: dict | None = None) -> None:
    """`n` more events of `user_id` (copies of one of theirs, a second apart from `at`), as batch `batch_id`."""
    con.execute(
        "insert into raw.events select e.* replace (? || '-' || cast(r.range as varchar) as event_id, "
        "cast(? as timestamptz) + to_seconds(r.range) as event_ts, cast(? as json) as context, "
        "cast(cast(? as timestamptz) as date) as event_date, now() as ingested_at, ? as batch_id) "
        "from (select * from raw.events where user_id = ? limit 1) as e cross join range(?) as r",
        [batch_id, at, json.dumps(context or {}), at, batch_id, user_id, n],
    )


def _event_grain(settings) -> tuple[tuple, list]:
    """What a plain build and a full refresh must agree on: the event grain and everything aggregated from it.
    Integers, keys and timestamps exactly (a row hash per table); each pair's weight within float rounding
    (a plain build folds a day's events into a pair's weight, moving it by the decay, and sums in another order)."""
    checked = {
        "intermediate.int_events_consented": "event_id, batch_id, user_id, event_ts",
        "marts.interaction_events": "event_id, weight",
        "marts.interactions": "user_id, item_id, n_events, n_purchases, n_ratings, first_ts, last_ts",
        "marts.user_features": "user_id, n_events, n_items, n_views, n_clicks, n_add_to_cart, n_purchases, "
        "n_ratings, n_sessions, n_active_days, first_ts, last_ts, segment, top_category, top_categories",
        "intermediate.int_sessions": "session_key, user_id, session_number, started_at, ended_at, n_events, n_items, "
        "n_purchases",
        "marts.interactions_split": "user_id, item_id, split, n_events, first_ts, last_ts, window_end",
        "marts.item_features": "item_id, events_1d, events_7d, events_30d, events_total, users_total, n_purchases",
        "intermediate.int_bot_users": "user_id, max_events_per_day, days_flagged",
    }
    with connect(settings) as con:
        exact = tuple(
            con.execute(f"select count(*), sum(hash({columns})) from {table}").fetchone()
            for table, columns in checked.items()
        )
        ordered = "select weight from marts.interactions order by user_id, item_id"
        weights = [w for (w,) in con.execute(ordered).fetchall()]
    return exact, weights


def _assert_plain_build_equals_full_refresh(settings, tmp_path, name: str) -> None:
    fresh = copy_home(settings, tmp_path / name)
    build_warehouse(fresh, full_refresh=True, select="int_events_deduped+")  # the same vars as the plain build
    (exact, weights), (fresh_exact, fresh_weights) = _event_grain(settings), _event_grain(fresh)
    assert exact == fresh_exact
    assert weights == pytest.approx(fresh_weights, rel=1e-9)


def test_plain_builds_keep_the_event_grain_a_full_refresh_would_build_as_eligibility_changes(built, tmp_path):
    """Each plain build must equal a full refresh, whatever changed (the event grain is views over the
    incremental int_events_deduped; this holds any future materialisation of it to the same).

    First build: one user withholds consent, one becomes a bot (a day of 2,001 events), one of a third user's
    events leaves a re-ingested batch, a fourth reaches exactly bot_max_events_per_day on that day (no bot).
    Second build: the first gives consent again and the bot's day is corrected away, both histories must come
    back whole; the fourth's day gets one more event in a later batch, and int_bot_users, which sums a day
    over its batches, flags them.
    """
    settings = copy_home(built, tmp_path / "home")
    with connect(settings) as con:
        refuser, bot, corrected, at_limit = (
            u for (u,) in con.execute(
                "select user_id from marts.user_features order by n_events desc, user_id limit 4"
            ).fetchall()
        )  # fmt: skip
        last = str(con.execute("select date_trunc('day', max(event_ts)) from raw.events").fetchone()[0])
        _add_events(con, refuser, "test:refusal", 1, last, {"consent": {"personalization": False}})
        _add_events(con, bot, "test:scraper-day", 2001, last)
        (that_day,) = con.execute(
            "select count(*) from intermediate.int_events_deduped where user_id = ? and event_date = cast(? as date) "
            "and event_type <> 'rating'",
            [at_limit, last],
        ).fetchone()
        _add_events(con, at_limit, "test:day-part-1", settings.bot_max_events_per_day - that_day, last)
        batch, gone = con.execute(
            "select batch_id, event_id from raw.events where user_id = ? order by event_ts limit 1", [corrected]
        ).fetchone()
        con.execute("delete from raw.events where event_id = ?", [gone])
        con.execute("update raw.events set ingested_at = now() where batch_id = ?", [batch])  # re-ingested
    build_warehouse(settings)
    with connect(settings) as con:
        held = dict(
            con.execute(
                "select user_id, count(*) from marts.interaction_events where user_id in (?, ?, ?) group by user_id",
                [refuser, bot, corrected],
            ).fetchall()
        )
        assert not con.execute("select count(*) from marts.interaction_events where event_id = ?", [gone]).fetchone()[0]
        flagged = "select count(*) from intermediate.int_bot_users where user_id = ?"
        assert con.execute(flagged, [at_limit]).fetchone() == (0,)  # exactly the limit is no bot
    assert refuser not in held and bot not in held and held[corrected] > 0
    _assert_plain_build_equals_full_refresh(settings, tmp_path, "fresh1")

    with connect(settings) as con:
        later = str(con.execute("select cast(? as timestamptz) + interval 1 second", [last]).fetchone()[0])
        _add_events(con, refuser, "test:consent-again", 1, later, {"consent": {"personalization": True}})
        con.execute("delete from raw.events where batch_id = 'test:scraper-day'")
        _add_events(con, bot, "test:scraper-day", 3, last)  # the corrected day: three events, a new ingested_at
        an_hour_on = str(con.execute("select cast(? as timestamptz) + interval 1 hour", [last]).fetchone()[0])
        _add_events(con, at_limit, "test:day-part-2", 1, an_hour_on)  # the same day, landed later: one over
    build_warehouse(settings)
    with connect(settings) as con:
        assert con.execute(flagged, [at_limit]).fetchone() == (1,)
        back = dict(
            con.execute(
                "select user_id, count(*) from marts.interaction_events where user_id in (?, ?) group by user_id",
                [refuser, bot],
            ).fetchall()
        )
        in_raw = dict(
            con.execute(
                "select user_id, count(*) from raw.events where user_id in (?, ?) group by user_id", [refuser, bot]
            ).fetchall()
        )
    assert back == in_raw  # every event of both, the old history included
    _assert_plain_build_equals_full_refresh(settings, tmp_path, "fresh2")


def a_later_batch_repeating_a_held_id(built, tmp_path, same_event_time: bool):
    """A copy of `built` whose raw.events gains a batch landed a day after the last, holding a held event's id and
    a new event. Written to raw.events directly: ingestion would quarantine the held id (it arrived on an earlier
    landing day), but int_events_deduped does not rely on it. `same_event_time`: a re-delivery of the held event
    (its own timestamp); otherwise the id reused by an event of the new day."""
    settings = copy_home(built, tmp_path / "home")
    with connect(settings) as con:
        held = con.execute(
            "select event_id, batch_id, user_id, item_id, event_ts, event_date from intermediate.int_events_deduped "
            "order by event_id limit 1"
        ).fetchone()
        landing, ingested = con.execute(
            "select max(landing_date) + 1, max(ingested_at) + interval 1 hour from raw.events"
        ).fetchone()
        late = "recforge:late:repeats.jsonl"
        for event_id in (held[0], "a-new-event-of-the-late-batch"):
            event_ts, event_date = (
                (held[4], held[5]) if same_event_time and event_id == held[0] else (ingested, landing)
            )
            con.execute(
                "insert into raw.events (event_id, user_id, item_id, event_type, event_ts, source, batch_id,"
                " landing_date, ingested_at, event_date) values (?, ?, ?, 'view', ?, 'recforge', ?, ?, ?, ?)",
                [event_id, held[2], held[3], event_ts, late, landing, ingested, event_date],
            )
    return settings, held[0], held[1], late


def deduped_batches(settings, event_ids: list[str]) -> list[tuple]:
    with connect(settings) as con:
        return con.execute(
            "select event_id, batch_id from intermediate.int_events_deduped where event_id in ? order by all",
            [event_ids],
        ).fetchall()


def test_an_incremental_build_keeps_the_first_arrival_of_an_event_a_later_batch_delivers_again(built, tmp_path):
    settings, held_id, held_batch, late = a_later_batch_repeating_a_held_id(built, tmp_path, same_event_time=True)
    build_warehouse(settings)  # incremental: only the late batch is new
    ids = [held_id, "a-new-event-of-the-late-batch"]
    assert deduped_batches(settings, ids) == sorted([(held_id, held_batch), ("a-new-event-of-the-late-batch", late)])
    run_dbt(settings, ["build", "--full-refresh", "--select", "int_events_deduped"])
    assert deduped_batches(settings, ids) == sorted([(held_id, held_batch), ("a-new-event-of-the-late-batch", late)])


def test_an_id_reused_on_another_date_fails_the_unique_test_and_a_full_refresh_keeps_its_first_arrival(built, tmp_path):
    """A day's build compares its ids with the held rows of its own event dates only (not the history): an id that
    an event of another date reuses is kept by the incremental model, and its unique test stops the build, naming
    it; nothing is lost, and a full refresh (which ranks every arrival) keeps the first."""
    settings, held_id, held_batch, late = a_later_batch_repeating_a_held_id(built, tmp_path, same_event_time=False)
    with pytest.raises(TransformError, match="unique_int_events_deduped_event_id"):
        build_warehouse(settings)
    assert deduped_batches(settings, [held_id]) == sorted([(held_id, held_batch), (held_id, late)])
    run_dbt(settings, ["build", "--full-refresh", "--select", "int_events_deduped"])
    assert deduped_batches(settings, [held_id]) == [(held_id, held_batch)]


def test_a_new_day_folds_into_what_is_held_and_equals_a_full_refresh(simulated, tmp_path):
    """A day's plain build folds the day's events into the per-user incremental tables and leaves everyone else's
    rows as they are: a mark left on a quiet user's pair and session survives it (a rebuild would erase it). The
    result equals a full refresh, sessions running across the day's boundary included; so does the build after
    late events that bridge two of a user's old sessions into one."""
    from datetime import timedelta

    from pipelines.ingest import ingest_interval
    from tests.conftest import whole_log

    settings = copy_home(simulated, tmp_path / "home")
    start, end = whole_log(settings)
    ingest_interval(settings, start, end - timedelta(days=1))
    build_warehouse(settings)
    ingest_interval(settings, end - timedelta(days=1), end)
    with connect(settings) as con:
        newest = con.execute("select max(ingested_at) from raw.events").fetchone()[0]
        quiet, item, session = con.execute(
            "select c.user_id, c.item_id, s.session_key from intermediate.int_interaction_cells c "
            "join intermediate.int_sessions s on s.user_id = c.user_id "
            "where c.user_id not in (select user_id from raw.events where ingested_at = ?) "
            "order by c.user_id, c.item_id, s.session_key limit 1",
            [newest],
        ).fetchone()
        pair = "where user_id = ? and item_id = ?"
        (weight,) = con.execute(f"select weight_at_reference from intermediate.int_interaction_cells {pair}",
                                [quiet, item]).fetchone()  # fmt: skip
        # Only marts.interactions reads a pair's weight: a negative one there can only be the mark.
        con.execute(f"update intermediate.int_interaction_cells set weight_at_reference = -1 {pair}", [quiet, item])
        con.execute("update intermediate.int_sessions set n_items = n_items + 1000 where session_key = ?", [session])
    build_warehouse(settings)
    with connect(settings) as con:
        assert con.execute("select weight from marts.interactions where user_id = ? and item_id = ?",
                           [quiet, item]).fetchone()[0] < 0  # fmt: skip
        assert con.execute("select n_items >= 1000 from intermediate.int_sessions where session_key = ?",
                           [session]).fetchone() == (True,)  # fmt: skip
        con.execute(f"update intermediate.int_interaction_cells set weight_at_reference = ? {pair}",
                    [weight, quiet, item])  # fmt: skip
        con.execute("update intermediate.int_sessions set n_items = n_items - 1000 where session_key = ?", [session])
    _assert_plain_build_equals_full_refresh(settings, tmp_path, "fresh1")

    with connect(settings) as con:
        user, ended, resumed = con.execute(
            "select user_id, ended_at, next_start from ("
            "  select user_id, ended_at, lead(started_at) over (partition by user_id order by started_at) as next_start"
            "  from intermediate.int_sessions) where next_start is not null "
            "order by next_start - ended_at, user_id limit 1"
        ).fetchone()
        sessions_of_user = "select count(*) from intermediate.int_sessions where user_id = ?"
        n_sessions = con.execute(sessions_of_user, [user]).fetchone()[0]
        steps = int((resumed - ended).total_seconds() // (20 * 60))
        for step in range(1, steps + 1):  # late events every 20 minutes across the gap: one session from two
            _add_events(con, user, f"test:late-{step}", 1, str(ended + timedelta(minutes=20 * step)))
    build_warehouse(settings)
    with connect(settings) as con:
        after = con.execute(sessions_of_user, [user]).fetchone()[0]
    assert after == n_sessions - 1
    _assert_plain_build_equals_full_refresh(settings, tmp_path, "fresh2")


def test_a_warehouse_from_before_per_user_folding_and_the_split_view_is_upgraded_by_a_plain_build(built, tmp_path):
    """int_sessions was a plain table: a warehouse built then has no checksums on it. The first plain build after
    the upgrade drops and rebuilds it (on-run-start) rather than fold into rows it cannot check.
    marts.interactions_split was a table holding every row, with no int_interactions_split_recent: the same build
    replaces it with the view over the pairs and the recent rows. Then the warehouse is what a full refresh gives."""
    settings = copy_home(built, tmp_path / "home")
    with connect(settings) as con:
        con.execute("alter table intermediate.int_sessions drop column event_checksum")
        con.execute("alter table intermediate.int_sessions drop column max_ingested_at")
        con.execute("update intermediate.int_sessions set n_items = n_items + 1000")  # what a rebuild erases
        con.execute("create table marts.split_as_before as select * from marts.interactions_split")
        con.execute("drop view marts.interactions_split")
        con.execute("alter table marts.split_as_before rename to interactions_split")
        con.execute("drop table intermediate.int_interactions_split_recent")
    build_warehouse(settings)
    with connect(settings) as con:
        assert con.execute("select max(n_items) < 1000, count(event_checksum) = count(*) "
                           "from intermediate.int_sessions").fetchone() == (True, True)  # fmt: skip
        kinds = con.execute(
            "select table_schema || '.' || table_name, table_type from information_schema.tables "
            "where table_name in ('interactions_split', 'int_interactions_split_recent') order by 1"
        ).fetchall()
    assert kinds == [("intermediate.int_interactions_split_recent", "BASE TABLE"), ("marts.interactions_split", "VIEW")]
    _assert_plain_build_equals_full_refresh(settings, tmp_path, "fresh")
