"""A challenger's publication: another registry version published through the same path and checks as the
champion's, complete on disk, never made live, and what an experiment's `alias: challenger` variant finds."""

import json

import pytest

from pipelines.experiments.declaration import Variant
from pipelines.experiments.state import publication_version
from pipelines.publication.publish import PublishError, current_version, publish, rollback, verify_version
from serving.format import MANIFEST
from tests.conftest import copy_home, run_recforge


@pytest.fixture(scope="module")
def home(retrained, tmp_path_factory):
    """retrained: v2 (ALS) is the champion, v3 (popularity alone) the rejected challenger; v2 published live."""
    settings = copy_home(retrained[0], tmp_path_factory.mktemp("challenger") / "home")
    publish(settings)
    return settings


def test_the_challenger_is_published_complete_and_current_still_names_the_champion(home):
    live = current_version(home.published_dir)
    result = publish(home, alias="challenger")
    assert not result.live and "(not live" in result.summary()
    assert current_version(home.published_dir) == live and live.endswith("-v2")
    assert result.version.endswith("-v3") and result.version != live
    manifest = verify_version(home.published_dir / result.version)  # every file matches its manifest
    assert manifest["model"]["version"] == "3" and manifest["model"]["algorithm"] == "popularity"
    # what `recforge experiments start` resolves a variant declared by alias to
    variant = Variant("challenger", 0.5, alias="challenger")
    assert publication_version(home, "ab", variant, registry_version=lambda *_: "3") == result.version
    by_number = publish(home, number="3")
    assert not by_number.live and json.loads((by_number.path / MANIFEST).read_text())["model"]["version"] == "3"
    assert current_version(home.published_dir) == live


def test_an_unknown_alias_or_version_is_refused_in_one_line_and_leaves_nothing_behind(home):
    before = sorted(p.name for p in home.published_dir.iterdir())
    with pytest.raises(PublishError, match="has no 'nightly' alias"):
        publish(home, alias="nightly")
    with pytest.raises(PublishError, match="has no version 99"):
        publish(home, number="99")
    assert sorted(p.name for p in home.published_dir.iterdir()) == before


def test_the_cli_names_a_bad_model_version_and_the_option(tmp_path):
    run = run_recforge(tmp_path / "home", "publish", "--model-version", "0", values={})
    assert run.returncode == 2
    assert "argument --model-version: not a model version number (1 or more): '0'" in run.stderr


def test_rollback_passes_over_a_challengers_publication_to_the_previous_champion(home):
    """champion A, a challenger's publication, champion B live: rolling back returns to A, never to the challenger."""
    first = current_version(home.published_dir)
    challenger = publish(home, alias="challenger").version
    second = publish(home).version
    assert first < challenger < second == current_version(home.published_dir)
    assert rollback(home) == first
