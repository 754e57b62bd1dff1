import json

import numpy as np
import pandas as pd
import pytest

from models.business_rules import category_capped_order
from pipelines import publish as publish_module
from pipelines.publish import (
    MANIFEST,
    PublishError,
    current_version,
    prune_versions,
    publish,
    sha256,
    switch_current,
)
from pipelines.validate import ValidationFailed
from pipelines.warehouse import connect
from tests.conftest import copy_home


def live_dir(settings):
    return settings.published_dir / current_version(settings.published_dir)


def test_current_names_a_complete_version_whose_files_match_the_manifest(published):
    directory = live_dir(published)
    manifest = json.loads((directory / MANIFEST).read_text())
    assert set(manifest["files"]) == {
        "user_recs.parquet",
        "fallback.parquet",
        "items.parquet",
        "item_index.faiss",
    }
    for name, facts in manifest["files"].items():
        assert sha256(directory / name) == facts["sha256"]
    assert manifest["model"]["registered_model"] == published.registered_model_name
    assert manifest["model"]["run_id"] and manifest["data_snapshot"]


def test_lists_hold_distinct_allowed_unseen_items(published):
    recs = pd.read_parquet(live_dir(published) / "user_recs.parquet")
    with connect(published) as con:
        banned_rows = con.execute("select item_id from staging.stg_items where is_blocked or not in_stock").fetchall()
        banned = {row[0] for row in banned_rows}
        seen = set(con.execute("select user_id || '|' || item_id from marts.interactions").fetchall())
    assert banned, "the simulated catalog should have blocked or out-of-stock items to exclude"
    assert not set(recs["item_id"]) & banned
    assert not {(f"{u}|{i}",) for u, i in zip(recs["user_id"], recs["item_id"], strict=True)} & seen
    assert not recs.duplicated(["user_id", "item_id"]).any()
    assert recs.groupby("user_id")["rank"].max().max() <= published.publish_top_n


def test_a_crash_mid_publish_leaves_the_live_version_untouched(published, tmp_path, monkeypatch):
    settings = copy_home(published, tmp_path / "home")
    before = current_version(settings.published_dir)
    versions_before = sorted(p.name for p in settings.published_dir.iterdir())

    def crash(*args, **kwargs):
        raise OSError("disk full while writing the index")

    monkeypatch.setattr(publish_module, "write_item_index", crash)
    with pytest.raises(OSError, match="disk full"):
        publish(settings)
    assert current_version(settings.published_dir) == before
    assert sorted(p.name for p in settings.published_dir.iterdir()) == versions_before


def test_current_is_never_pointed_at_an_incomplete_version(published, tmp_path):
    settings = copy_home(published, tmp_path / "home")
    (settings.published_dir / "half-written").mkdir()
    with pytest.raises(PublishError, match="manifest.json is missing"):
        switch_current(settings.published_dir, "half-written")


def test_pruning_keeps_the_newest_versions_and_never_the_live_one(tmp_path):
    root = tmp_path / "published"
    for name in ["v1", "v2", "v3", "v4"]:
        (root / name).mkdir(parents=True)
        (root / name / MANIFEST).write_text("{}")
    switch_current(root, "v1")
    removed = prune_versions(root, keep=2)
    assert removed == ["v2"]
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["v1", "v3", "v4"]


def test_no_category_fills_more_than_its_cap_of_a_top_10(published):
    recs = pd.read_parquet(live_dir(published) / "user_recs.parquet")
    items = pd.read_parquet(live_dir(published) / "items.parquet")[["item_id", "category"]]
    top = recs[recs["rank"] <= 10].merge(items, on="item_id")
    share = top.groupby(["user_id", "category"]).size().groupby("user_id").max() / top.groupby("user_id").size()
    assert share.max() <= published.category_cap


def test_the_cap_reorders_only_the_head_and_keeps_every_item():
    ranked = np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [0, 1, 2, -1, -1, -1, -1, -1, -1, -1, -1, -1]])
    categories = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 3, 3])
    capped = np.take_along_axis(ranked, category_capped_order(ranked, categories, cap=0.4), axis=1)
    assert capped[0].tolist() == [0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 4, 5]
    assert capped[1].tolist() == ranked[1].tolist()  # too few categories to do better: unchanged


def test_a_publication_that_fails_its_suite_never_goes_live(published, tmp_path, monkeypatch):
    settings = copy_home(published, tmp_path / "home")
    before = current_version(settings.published_dir)
    original = publish_module.build_lists

    def with_a_blocked_item(*args, **kwargs):
        user_recs, fallback = original(*args, **kwargs)
        with connect(settings) as con:
            blocked = con.execute("select item_id from staging.stg_items where is_blocked limit 1").fetchone()[0]
        user_recs.loc[user_recs.index[0], "item_id"] = blocked
        return user_recs, fallback

    monkeypatch.setattr(publish_module, "build_lists", with_a_blocked_item)
    with pytest.raises(ValidationFailed, match=r"publication_lists.expect_column_values_to_be_in_set\(is_blocked\)"):
        publish(settings)
    assert current_version(settings.published_dir) == before
    assert not [p for p in settings.published_dir.iterdir() if p.name.startswith(".staging")]
