import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.lists.rules import category_capped_order
from pipelines.publication import publish as publish_module
from pipelines.publication.publish import (
    PublishError,
    current_version,
    prune_versions,
    publish,
    publish_lock,
    rollback,
    switch_current,
    verify_version,
    versions,
)
from pipelines.validation.checkpoints import ValidationFailed
from pipelines.warehouse.connection import connect
from serving.format import MANIFEST, sha256
from tests.conftest import assert_nothing_went_live, copy_home

REPO = Path(__file__).resolve().parents[2]


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


def test_the_manifest_records_the_rules_their_parameters_and_the_index_type(published):
    manifest = json.loads((live_dir(published) / MANIFEST).read_text())
    assert manifest["rules"]["applied"] == [
        "exclude_seen_items",
        "exclude_purchased_items",
        "exclude_blocked_items",
        "exclude_out_of_stock_items",
        "cold_user_popularity_blend",
        "category_cap_top10",
        "reasons",
    ]
    parameters = manifest["rules"]["parameters"]
    assert parameters["category_cap"] == published.category_cap
    assert parameters["cold_user_below"] == published.cold_user_below
    assert parameters["mmr_enabled"] is False
    assert manifest["item_index"] == {"type": "flat", "metric": "inner_product", "dimension": published.als_factors}
    assert sum(manifest["counts"]["reasons"].values()) == manifest["counts"]["user_rows"]


def test_lists_hold_distinct_allowed_unseen_items(published):
    recs = pd.read_parquet(live_dir(published) / "user_recs.parquet")
    with connect(published) as con:
        banned_rows = con.execute(
            "select item_id from marts.item_features where in_catalog and (is_blocked or not in_stock)"
        ).fetchall()
        banned = {row[0] for row in banned_rows}
        seen = set(con.execute("select user_id || '|' || item_id from marts.interactions").fetchall())
    assert banned, "the simulated catalog should have blocked or out-of-stock items to exclude"
    assert not set(recs["item_id"]) & banned
    assert not {(f"{u}|{i}",) for u, i in zip(recs["user_id"], recs["item_id"], strict=True)} & seen
    assert not recs.duplicated(["user_id", "item_id"]).any()
    assert recs.groupby("user_id")["rank"].max().max() <= published.publish_top_n


def test_a_crash_mid_publish_raising_leaves_the_live_version_untouched(published, tmp_path, monkeypatch):
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


def test_pruning_spares_the_versions_a_running_experiment_names(settings):
    import json

    from pipelines.publication.publish import experiment_versions
    from serving.experiments import STATE_FILE

    root = settings.published_dir
    for name in ["v1", "v2", "v3", "v4", "v5"]:
        (root / name).mkdir(parents=True)
        (root / name / MANIFEST).write_text("{}")
    switch_current(root, "v5")
    state = {"ab": {"status": "running", "publications": {"control": "v5", "challenger": "v2"}},
             "old": {"status": "stopped", "publications": {"control": "v1"}}}  # fmt: skip
    (settings.home / STATE_FILE).parent.mkdir(parents=True, exist_ok=True)
    (settings.home / STATE_FILE).write_text(json.dumps(state))
    assert experiment_versions(settings) == {"v5", "v2"}
    assert prune_versions(root, keep=1, spared=experiment_versions(settings)) == ["v1", "v3", "v4"]
    (settings.home / STATE_FILE).write_text("{broken")
    assert experiment_versions(settings) == set()  # an unreadable state never stops a publish


def test_no_category_fills_more_than_its_cap_of_a_top_10(published):
    recs = pd.read_parquet(live_dir(published) / "user_recs.parquet")
    items = pd.read_parquet(live_dir(published) / "items.parquet")[["item_id", "category"]]
    top = recs[recs["rank"] <= 10].merge(items, on="item_id")
    share = top.groupby(["user_id", "category"]).size().groupby("user_id").max() / top.groupby("user_id").size()
    assert share.max() <= published.category_cap


def test_the_cap_reorders_only_the_head_and_keeps_every_item():
    ranked = np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [0, 1, 2, -1, -1, -1, -1, -1, -1, -1, -1, -1]])
    categories = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 3, 3])
    capped = np.take_along_axis(ranked, category_capped_order(ranked, categories, cap=0.4, head=10), axis=1)
    assert capped[0].tolist() == [0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 4, 5]
    assert capped[1].tolist() == ranked[1].tolist()  # too few categories to do better: unchanged


def test_a_publication_that_fails_its_suite_never_goes_live(published, tmp_path, monkeypatch):
    settings = copy_home(published, tmp_path / "home")
    before = current_version(settings.published_dir)
    original = publish_module.list_batches

    def with_a_blocked_item(model, *args, **kwargs):
        with connect(settings) as con:
            blocked = con.execute(
                "select item_id from marts.item_features where in_catalog and is_blocked limit 1"
            ).fetchone()[0]
        for number, batch in enumerate(original(model, *args, **kwargs)):
            if number == 0:
                batch.top.ranked[0, 0] = list(model.item_ids).index(blocked)
            yield batch

    monkeypatch.setattr(publish_module, "list_batches", with_a_blocked_item)
    with pytest.raises(ValidationFailed, match=r"publication_lists.expect_column_values_to_be_in_set\(is_blocked\)"):
        publish(settings)
    assert_nothing_went_live(settings, before)


@pytest.mark.parametrize(
    ("kind", "bad", "violation"),
    [
        ("user", "x" * 100_000, "id_too_long"),
        ("item", "i 1", "id_bad_characters"),
        ("user", "u\x001", "id_bad_characters"),
    ],
)
def test_an_id_outside_the_id_contract_is_never_published(published, tmp_path, monkeypatch, kind, bad, violation):
    """Ingest quarantines such ids; if one still reaches the model, the publisher refuses before any allocation."""
    settings = copy_home(published, tmp_path / "home")
    before = current_version(settings.published_dir)
    original = publish_module.load_champion

    def with_a_bad_id(*args, **kwargs):
        model, facts = original(*args, **kwargs)
        ids = getattr(model, f"{kind}_ids").astype(object)
        ids[0] = bad
        setattr(model, f"{kind}_ids", ids)
        return model, facts

    monkeypatch.setattr(publish_module, "load_champion", with_a_bad_id)
    with pytest.raises(
        PublishError, match=rf"refusing to publish: 1 {kind} id\(s\) break the id contract .*{violation}"
    ):
        publish(settings)
    assert current_version(settings.published_dir) == before


# --- rollback


def test_rollback_makes_the_previous_complete_version_live(published, tmp_path):
    settings = copy_home(published, tmp_path / "home")
    first = current_version(settings.published_dir)
    second = publish(settings).version
    assert rollback(settings) == first
    assert current_version(settings.published_dir) == first
    assert (settings.published_dir / second / MANIFEST).exists(), "the newer version is kept for a return"


def test_rollback_to_a_named_version_returns_to_it(published, tmp_path):
    settings = copy_home(published, tmp_path / "home")
    first = current_version(settings.published_dir)
    second = publish(settings).version
    rollback(settings)
    assert rollback(settings, to=second) == second
    assert current_version(settings.published_dir) != first


def test_rollback_without_an_older_version_is_a_clear_error(published, tmp_path):
    settings = copy_home(published, tmp_path / "home")
    live = current_version(settings.published_dir)
    with pytest.raises(PublishError, match=f"no complete champion version older than the live {live}"):
        rollback(settings)
    assert current_version(settings.published_dir) == live


def test_rollback_refuses_a_version_whose_files_do_not_match_the_manifest(published, tmp_path):
    settings = copy_home(published, tmp_path / "home")
    first = current_version(settings.published_dir)
    second = publish(settings).version
    (settings.published_dir / first / "user_recs.parquet").write_bytes(b"damaged")
    with pytest.raises(PublishError, match="user_recs.parquet is missing or does not match its checksum"):
        rollback(settings)
    assert current_version(settings.published_dir) == second


def test_rollback_to_an_unknown_version_names_the_versions_there_are(published, tmp_path):
    settings = copy_home(published, tmp_path / "home")
    with pytest.raises(PublishError, match="'no-such' is not a complete version"):
        rollback(settings, to="no-such")


def test_cli_publish_rollback_prints_the_new_live_version_and_fails_cleanly_without_one(published, tmp_path):
    settings = copy_home(published, tmp_path / "home")
    env = {**os.environ, **settings.to_environment(), "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "pipelines.cli", "publish", "rollback"]
    failed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1
    assert "recforge publish: error: no complete champion version older than the live" in failed.stderr
    first = current_version(settings.published_dir)
    publish(settings)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"rolled back: {first} is live" in done.stdout
    assert current_version(settings.published_dir) == first


# --- a publish killed mid-way (a real process, SIGKILL)

# The child runs the real publish with one step replaced by "signal the parent, then wait to be killed".
STALL_AT = """
import sys, time
from pathlib import Path
from pipelines.publication import publish as publish_module
from tests.conftest import make_settings

home, step, marker = sys.argv[1:4]

def stall(*args, **kwargs):
    Path(marker).touch()
    time.sleep(600)

setattr(publish_module, step, stall)
publish_module.publish(make_settings(Path(home)))
"""


@pytest.mark.parametrize(
    "step",
    [
        "validate_publication",  # staging exists, nothing written yet
        "write_item_index",  # lists written into staging, index not
        "switch_current",  # the new version renamed into place, CURRENT not yet switched
    ],
)
def test_a_publish_killed_mid_way_leaves_the_live_version_untouched_and_the_next_succeeds(published, tmp_path, step):
    settings = copy_home(published, tmp_path / "home")
    root = settings.published_dir
    live = current_version(root)
    live_files = {p.name: sha256(p) for p in (root / live).iterdir()}
    marker = tmp_path / "stalled"
    child = subprocess.Popen(
        [sys.executable, "-c", STALL_AT, str(settings.home), step, str(marker)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, f"the publish exited ({child.returncode}) before reaching {step}"
            assert time.monotonic() < deadline, f"the publish never reached {step}"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)

    assert current_version(root) == live
    assert {p.name: sha256(p) for p in (root / live).iterdir()} == live_files
    for version in versions(root):  # whatever is visible is complete
        assert verify_version(root / version)["version"] == version
    leftovers = [p.name for p in root.iterdir() if p.name.startswith(".staging-")]
    assert bool(leftovers) == (step != "switch_current")

    result = publish(settings)
    assert current_version(root) == result.version
    assert not [p.name for p in root.iterdir() if p.name.startswith(".staging-")]


def test_a_second_publisher_is_refused_while_one_holds_the_lock(published, tmp_path):
    settings = copy_home(published, tmp_path / "home")
    with publish_lock(settings.published_dir):
        with pytest.raises(PublishError, match="another publish or rollback holds"):
            rollback(settings)


def test_a_catalog_item_nobody_touched_is_indexed_and_has_similar_items_with_the_content_model(built, tmp_path):
    """The content hybrid as champion: a brand-new item (a twin of an existing one's text) is published."""
    from pipelines.training.train import train_and_register
    from pipelines.warehouse.transform import build_warehouse
    from tests.serving.test_serving import client_for

    settings = copy_home(built, tmp_path / "home", train_candidates=["als_content"], als_content_encoder="tfidf")
    with connect(settings) as con:
        twin = con.execute(
            "select item_id from marts.item_features where in_catalog and users_total > 0 order by users_total desc"
        ).fetchone()[0]
        con.execute(
            "insert into raw.items select 'i999999', title, category, price, true, false, created_at, attributes "
            "from raw.items where item_id = ?",
            [twin],
        )
    build_warehouse(settings)
    train_and_register(settings)
    publish(settings)
    directory = live_dir(settings)
    items = pd.read_parquet(directory / "items.parquet").set_index("item_id")
    assert "i999999" in items.index  # a row of the FAISS index
    recs = pd.read_parquet(directory / "user_recs.parquet")
    assert (recs["item_id"] == "i999999").any()  # it takes list slots before anyone touched it
    with client_for(settings) as client:
        body = client.get("/v1/items/i999999/similar", params={"k": 5}).json()
    neighbours = [item["item_id"] for item in body["items"]]
    assert len(neighbours) == 5
    same_category = items.loc[neighbours, "category"] == items.loc[twin, "category"]
    assert same_category.mean() >= 0.6, (twin, neighbours)
