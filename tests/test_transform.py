import pytest

from pipelines.transform import TransformError, build_warehouse
from pipelines.warehouse import connect
from tests.conftest import copy_home


def test_marts_hold_every_accepted_event_exactly_once(built):
    with connect(built) as con:
        raw = con.execute("select count(*) from raw.events").fetchone()[0]
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
