"""The `publication` checkpoint's checks, computed by DuckDB over the written lists file.

Each test writes a tiny user_recs.parquet whose right answer is known and breaks one rule.
"""

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.validation.checkpoints import ValidationFailed, publication_user_checks, validate_publication
from tests.conftest import make_settings

ITEMS = pd.DataFrame(
    {
        "item_id": ["a", "b", "c", "d", "blocked", "gone"],
        "category": ["x", "y", "z", None, "x", "y"],
        "in_stock": [True, True, True, True, True, False],
        "is_blocked": [False, False, False, False, True, False],
    }
)
NOTHING_BOUGHT = pd.DataFrame({"user_id": pd.Series([], dtype=str), "item_id": pd.Series([], dtype=str)})


def write_lists(tmp_path, lists: dict[str, list[str]]):
    rows = [(user, item, rank) for user, items in lists.items() for rank, item in enumerate(items, start=1)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rank"])
    path = tmp_path / "user_recs.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return path


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path / "home", category_cap_head=3)


def checks(settings, tmp_path, lists, purchased=NOTHING_BOUGHT) -> pd.DataFrame:
    return publication_user_checks(settings, write_lists(tmp_path, lists), ITEMS, purchased).set_index("user_id")


def test_clean_lists_raise_no_flag_and_count_distinct_items(settings, tmp_path):
    users = checks(settings, tmp_path, {"u1": ["a", "b", "c"], "u2": ["b", "a"]})
    assert list(users.index) == ["u1", "u2"]  # one row per user, not per listed item
    assert not users[["is_blocked", "already_purchased", "repeats_an_item"]].any().any()
    assert users["in_stock"].all()
    assert users["n_items"].tolist() == [3, 2]
    assert users["max_category_share_head"].tolist() == pytest.approx([1 / 3, 1 / 2])


def test_a_blocked_item_flags_only_its_user(settings, tmp_path):
    users = checks(settings, tmp_path, {"u1": ["a", "blocked"], "u2": ["a", "b"]})
    assert users["is_blocked"].to_dict() == {"u1": True, "u2": False}


def test_an_out_of_stock_item_flags_its_user(settings, tmp_path):
    users = checks(settings, tmp_path, {"u1": ["gone", "a"], "u2": ["a"]})
    assert users["in_stock"].to_dict() == {"u1": False, "u2": True}


def test_an_item_missing_from_the_catalog_counts_as_blocked_and_out_of_stock(settings, tmp_path):
    users = checks(settings, tmp_path, {"u1": ["a", "unknown"]})
    assert users.loc["u1", "is_blocked"] and not users.loc["u1", "in_stock"]


def test_an_item_the_user_already_bought_flags_that_user_only(settings, tmp_path):
    purchased = pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["b", "c"]})
    users = checks(settings, tmp_path, {"u1": ["a", "b"], "u2": ["a", "b"]}, purchased)
    assert users["already_purchased"].to_dict() == {"u1": True, "u2": False}


def test_an_item_listed_twice_for_a_user_is_a_repeat_and_counts_once(settings, tmp_path):
    users = checks(settings, tmp_path, {"u1": ["a", "b", "a"], "u2": ["a", "b"]})
    assert users["repeats_an_item"].to_dict() == {"u1": True, "u2": False}
    assert users.loc["u1", "n_items"] == 2


def test_the_category_share_counts_only_the_head_and_no_category_is_no_category(settings, tmp_path):
    # head = 3: u1's first three are x, x(blocked), d(no category): x takes 2 of 3; c beyond the head is ignored
    users = checks(settings, tmp_path, {"u1": ["a", "blocked", "d", "c", "c"], "u2": ["d", "d"]})
    assert users.loc["u1", "max_category_share_head"] == pytest.approx(2 / 3)
    assert pd.isna(users.loc["u2", "max_category_share_head"])  # only uncategorised items: nothing to cap


def test_a_repeated_item_fails_the_checkpoint_naming_suite_and_expectation(settings, tmp_path):
    lists = {f"u{n}": ["a", "b", "c", "d"] for n in range(3)} | {"u9": ["a", "b", "c", "a"]}
    expected = r"publication_lists.expect_column_values_to_be_in_set\(repeats_an_item\)"
    with pytest.raises(ValidationFailed, match=expected):
        validate_publication(settings, write_lists(tmp_path, lists), ITEMS, NOTHING_BOUGHT, "v-test")


def test_a_list_shorter_than_min_items_fails_the_users_suite(settings, tmp_path):
    lists = {"u1": ["a", "b"]}  # min(eval_k, publish_top_n) items are required
    with pytest.raises(ValidationFailed, match=r"publication_users.expect_column_values_to_be_between\(n_items\)"):
        validate_publication(settings, write_lists(tmp_path, lists), ITEMS, NOTHING_BOUGHT, "v-test")
