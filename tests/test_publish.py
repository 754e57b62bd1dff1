import json

import pandas as pd
import pytest

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
