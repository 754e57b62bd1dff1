"""Publication scores users in batches and appends each to the lists file: the batch size changes nothing.

The lists file is the same whether users are scored 7 at a time (many batches, each its own row
groups) or all at once: same rows in the same order, sorted by user then rank across the batch
boundaries, the same manifest counts, and consent-withheld users left out of whichever batch they fall in.

"The same" is exact for users, ranks, items and reasons; a score may differ in its last bit, because BLAS
picks its kernel by the shape of the product (7 users or 400): OpenBLAS on an AMD EPYC gave scores up to
2.4e-7 apart for the same user and item, with every list identical.
"""

from collections import Counter

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipelines.publication import publish as publish_module
from pipelines.publication.publish import publish
from pipelines.publication.user_recs import USER_RECS_SCHEMA
from serving.format import USER_RECS, USER_RECS_COLUMNS, current_version, read_manifest
from tests.conftest import assert_nothing_went_live, copy_home

SMALL_BATCH = 7


def assert_same_lists(written: pd.DataFrame, expected: pd.DataFrame) -> None:
    """The same rows in the same order; scores equal up to float32 rounding (see the module docstring)."""
    assert list(written.columns) == list(expected.columns)
    exact = [column for column in written.columns if column != "score"]
    assert written[exact].equals(expected[exact])
    np.testing.assert_allclose(written["score"], expected["score"], rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def in_batches_and_at_once(published, tmp_path_factory):
    """The same champion published 7 users at a time and in one batch: (lists, manifest) of each."""
    results = []
    for batch_users in (SMALL_BATCH, 10_000_000):
        settings = copy_home(published, tmp_path_factory.mktemp(f"batch{batch_users}") / "home",
                             publish_batch_users=batch_users)  # fmt: skip
        directory = publish(settings).path
        results.append((pq.ParquetFile(directory / USER_RECS), read_manifest(directory)))
    return results


def test_lists_published_in_batches_of_7_users_equal_the_lists_published_at_once(in_batches_and_at_once):
    (batched, _), (whole, _) = in_batches_and_at_once
    assert batched.metadata.num_row_groups > whole.metadata.num_row_groups  # the batches were really many
    assert batched.schema_arrow.equals(whole.schema_arrow)
    assert_same_lists(batched.read().to_pandas(), whole.read().to_pandas())


def test_the_lists_file_keeps_the_contracts_columns_and_types(in_batches_and_at_once):
    (batched, _), _ = in_batches_and_at_once
    schema = batched.schema_arrow
    assert schema.names == [name for name, _ in USER_RECS_COLUMNS]
    assert [str(field.type) for field in schema] == ["string", "int16", "string", "float", "string", "int32"]
    assert schema.equals(USER_RECS_SCHEMA)


def test_rows_are_sorted_by_user_then_rank_across_batch_boundaries(in_batches_and_at_once):
    (batched, _), _ = in_batches_and_at_once
    table = batched.read(columns=["user_id", "rank"])
    users, ranks = table.column("user_id").to_pylist(), table.column("rank").to_pylist()
    assert users == sorted(users)
    expected_rank, previous = 0, None
    for user, rank in zip(users, ranks, strict=True):
        expected_rank = expected_rank + 1 if user == previous else 1
        assert rank == expected_rank, f"user {user}: rank {rank} where {expected_rank} was due"
        previous = user


def test_the_manifest_counts_are_the_same_and_match_the_file(in_batches_and_at_once):
    (batched, batched_manifest), (_, whole_manifest) = in_batches_and_at_once
    assert batched_manifest["counts"] == whole_manifest["counts"]
    table = batched.read(columns=["user_id", "reason"])
    counts = batched_manifest["counts"]
    assert counts["user_rows"] == table.num_rows
    assert counts["users"] == len(set(table.column("user_id").to_pylist()))
    assert counts["reasons"] == dict(Counter(reason.split(":")[0] for reason in table.column("reason").to_pylist()))


def test_consent_withheld_users_are_left_out_of_whichever_batch_they_fall_in(published, tmp_path, monkeypatch):
    settings = copy_home(published, tmp_path / "home", publish_batch_users=SMALL_BATCH)
    users = sorted(set(pq.read_table(publish(settings).path / USER_RECS, columns=["user_id"])
                       .column("user_id").to_pylist()))  # fmt: skip
    # The first and last user of a batch, and one in the middle of the next: around a boundary.
    withheld = {users[SMALL_BATCH - 1], users[SMALL_BATCH], users[SMALL_BATCH + 3]}
    # The consent mart's own path into publication is covered by test_consent.py; here only where they fall.
    monkeypatch.setattr(publish_module, "read_consent_withheld", lambda _settings: withheld)
    directory = publish(settings).path
    listed = pq.read_table(directory / USER_RECS, columns=["user_id"]).column("user_id").to_pylist()
    assert not withheld & set(listed)
    assert sorted(set(listed)) == [user for user in users if user not in withheld]
    counts = read_manifest(directory)["counts"]
    assert counts["users"] == len(users) - len(withheld)
    assert counts["consent_withheld_users"] == len(withheld)


def test_the_published_lists_are_the_lists_build_lists_makes_at_once(published, in_batches_and_at_once):
    from models.lists.ranked import ListRules
    from models.lists.stored import build_lists

    (batched, _), _ = in_batches_and_at_once
    model, _ = publish_module.load_champion(published)
    items, purchased = publish_module.read_items(published), publish_module.read_purchases(published)
    expected, _ = build_lists(model, items, ListRules.from_settings(published), purchased)
    expected = expected.sort_values(["user_id", "rank"], ignore_index=True)
    written = batched.read().to_pandas()
    assert_same_lists(written.drop(columns="item_row"), expected)
    model_rows = pd.Index(model.item_ids.astype(str)).get_indexer(written["item_id"])
    assert (written["item_row"].to_numpy() == model_rows).all()  # items.parquet lists the model's items in order


def test_the_audit_reads_the_published_top_eval_k_of_every_user(published, tmp_path, monkeypatch):
    """The audit's input, filled in batch by batch, is what the old whole-table derivation gave from the file."""
    settings = copy_home(published, tmp_path / "home", publish_batch_users=SMALL_BATCH)
    original, seen = publish_module.audit_publication, {}

    def keep_the_input(settings, audit, *args):
        seen["audit"] = audit
        return original(settings, audit, *args)

    monkeypatch.setattr(publish_module, "audit_publication", keep_the_input)
    directory = publish(settings).path
    model, _ = publish_module.load_champion(settings)
    recs = pq.read_table(directory / USER_RECS).to_pandas()
    top = recs[recs["rank"] <= settings.eval_k]
    expected = np.full((len(model.user_ids), settings.eval_k), -1, dtype=np.int64)
    rows = pd.Index(model.user_ids.astype(str)).get_indexer(top["user_id"])
    expected[rows, top["rank"].to_numpy() - 1] = pd.Index(model.item_ids.astype(str)).get_indexer(top["item_id"])
    assert np.array_equal(seen["audit"].recommended, expected)


def test_lists_scored_in_two_worker_processes_equal_the_lists_scored_in_one(
    published, in_batches_and_at_once, tmp_path
):
    (batched, batched_manifest), _ = in_batches_and_at_once
    settings = copy_home(published, tmp_path / "home", publish_batch_users=SMALL_BATCH, publish_workers=2)
    directory = publish(settings).path
    in_workers = pq.ParquetFile(directory / USER_RECS)
    assert in_workers.metadata.num_row_groups == batched.metadata.num_row_groups  # batch by batch, in order
    assert_same_lists(in_workers.read().to_pandas(), batched.read().to_pandas())
    assert read_manifest(directory)["counts"] == batched_manifest["counts"]


def test_a_batch_that_fails_in_a_worker_process_fails_the_publication_and_nothing_goes_live(
    published, tmp_path, monkeypatch
):
    from models.lists import stored

    settings = copy_home(published, tmp_path / "home", publish_batch_users=SMALL_BATCH, publish_workers=2)
    before = current_version(settings.published_dir)
    original = stored.lists_of

    def failing_on_the_third_batch(model, users, *args):
        if stored.users_by_id(model)[2 * SMALL_BATCH] in users:
            raise ValueError("a batch that cannot be scored")
        return original(model, users, *args)

    monkeypatch.setattr(stored, "lists_of", failing_on_the_third_batch)  # the forked workers inherit it
    with pytest.raises(ValueError, match="a batch that cannot be scored"):
        publish(settings)
    assert_nothing_went_live(settings, before)


def test_a_worker_process_that_dies_fails_the_publication_naming_the_users_it_held(published, tmp_path, monkeypatch):
    """A worker killed mid-batch (the kernel's OOM killer, say) fails the run instead of leaving it waiting."""
    import os

    from models.lists import stored

    settings = copy_home(published, tmp_path / "home", publish_batch_users=SMALL_BATCH, publish_workers=2)
    before = current_version(settings.published_dir)
    original = stored.lists_of

    def dying_on_the_second_batch(model, users, *args):
        if stored.users_by_id(model)[SMALL_BATCH] in users:
            os._exit(9)
        return original(model, users, *args)

    monkeypatch.setattr(stored, "lists_of", dying_on_the_second_batch)
    with pytest.raises(
        RuntimeError, match=rf"a list worker process died .* \(places {SMALL_BATCH}-{2 * SMALL_BATCH - 1} of"
    ):
        publish(settings)
    assert_nothing_went_live(settings, before)


def test_publish_workers_is_range_checked():
    from pydantic import ValidationError

    from pipelines.settings import Settings

    for bad in ({"publish_workers": 0}, {"publish_workers": 65}):
        with pytest.raises(ValidationError, match="publish_workers"):
            Settings(**bad)


def test_unset_workers_are_one_per_core_this_process_may_use(tmp_path):
    import os

    from pipelines.publication.publish import list_workers
    from tests.conftest import make_settings

    assert list_workers(make_settings(tmp_path / "a", publish_workers=3)) == 3
    assert list_workers(make_settings(tmp_path / "b")) == len(os.sched_getaffinity(0))
