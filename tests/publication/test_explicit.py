"""pipelines/publication/explicit.py: lists chosen by the caller, published under the same contract."""

import json

import pytest

from pipelines.publication.explicit import EXPLICIT_ALGORITHM, ExplicitListsError, publish_lists
from pipelines.publication.publish import PublishError, current_version
from serving.publication import Publication
from tests.conftest import make_settings

CATALOG = [f"i{n}" for n in range(6)]


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path / "home", publish_top_n=3, eval_k=3, recall_k=3)


def test_the_lists_are_served_as_given_and_the_manifest_says_they_are_explicit(settings):
    version = publish_lists(settings, {"u2": ["i4", "i1"], "u1": ["i0", "i5", "i3"]}, CATALOG, "logging")
    assert current_version(settings.published_dir) == version
    live = Publication(settings.published_dir / version)
    answer = json.loads(live.fast_answer("u1", b"k=3", b"r1")[0])
    assert [(i["item_id"], i["score"]) for i in answer["items"]] == [("i0", 1), ("i5", 0.5), ("i3", 0.333333)]
    assert json.loads(live.fast_answer("u2", b"k=2", b"r2")[0])["items"][0]["item_id"] == "i4"
    manifest = json.loads((settings.published_dir / version / "manifest.json").read_text())
    assert manifest["model"]["algorithm"] == EXPLICIT_ALGORITHM and manifest["model"]["label"] == "logging"
    assert version.endswith("-explicit-logging")


@pytest.mark.parametrize(
    "lists, catalog, error, message",
    [
        ({"u1": ["i0", "i9"]}, CATALOG, ExplicitListsError, "user u1: i9 is not in the catalog"),
        ({"u1": ["i0", "i0"]}, CATALOG, ExplicitListsError, "user u1: the list repeats an item"),
        ({"u1": CATALOG[:4]}, CATALOG, ExplicitListsError, "user u1: 4 items, deeper than publish_top_n=3"),
        ({"u1": ["i0"]}, ["i0", "i0"], ExplicitListsError, "the catalog repeats an item id"),
        ({"u 1": ["i0"]}, CATALOG, PublishError, "user id"),
    ],
)
def test_lists_that_break_the_contract_are_refused_and_nothing_goes_live(settings, lists, catalog, error, message):
    with pytest.raises(error, match=message):
        publish_lists(settings, lists, catalog, "bad")
    assert not settings.published_dir.exists() or current_version(settings.published_dir) is None
