"""Each model says when the data cannot support it (``Recommender.refuses``): training leaves it out, with why."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models import (
    ALSRecommender,
    CatalogTooLargeError,
    EASERecommender,
    RankerRecommender,
    RecentPopularityRecommender,
    SASRecRecommender,
)
from models.dataset import Interactions
from tests.models.test_contract import DAY, T0, community_data, community_walks


def one_item_per_user() -> Interactions:
    frame = community_walks().drop_duplicates("user_id")
    return Interactions.from_frame(frame)


def without_time() -> Interactions:
    return Interactions.from_frame(community_walks().drop(columns="last_ts"))


def test_models_accept_data_they_can_learn_from():
    data = community_data()
    for model in (ALSRecommender(), EASERecommender(), SASRecRecommender(), RecentPopularityRecommender()):
        assert model.refuses(data) is None, model.name
    assert RankerRecommender(label_days=4, label_windows=2, generators=["als", "popularity"]).refuses(data) is None


def test_ease_refuses_a_catalog_above_its_size_guard_and_fit_raises_the_same_reason():
    reason = EASERecommender(max_items=10).refuses(community_data())
    assert "the catalog has 20 items, above max_items=10" in reason
    with pytest.raises(CatalogTooLargeError, match="above max_items=10"):
        EASERecommender(max_items=10).fit(community_data())


def test_sasrec_refuses_users_without_sequences():
    reason = SASRecRecommender().refuses(one_item_per_user())
    assert "users with a sequence of two or more items; 0 of 40 users have one" in reason


def test_time_aware_models_refuse_interactions_without_times():
    data = without_time()
    assert "interaction times" in SASRecRecommender().refuses(data)
    assert "interaction times" in RecentPopularityRecommender().refuses(data)
    assert "interaction times" in RankerRecommender().refuses(data)
    assert ALSRecommender().refuses(data) is None


def test_the_ranker_refuses_data_shorter_than_its_label_windows():
    span = (community_walks()["last_ts"].max() - T0) / DAY  # 23 days
    reason = RankerRecommender(label_days=12, label_windows=2).refuses(community_data())
    assert "needs more than 24 days of interactions for 2 label window(s) of 12 days" in reason
    assert f"the data spans {span:.1f} days" in reason


def test_the_ranker_refuses_a_label_window_with_too_few_users():
    frame = community_walks()
    frame = frame[frame["last_ts"] < frame["last_ts"].max() - 3 * DAY]  # the walks' last days
    late = pd.DataFrame(
        {"user_id": ["u00"], "item_id": ["i05"], "weight": [1.0], "last_ts": [frame["last_ts"].max() + 3 * DAY]}
    )
    data = Interactions.from_frame(pd.concat([frame, late]))
    reason = RankerRecommender(label_days=2, label_windows=1).refuses(data)
    assert "label window 1 of 1 (2 days) has 1 users with a history before it" in reason


def test_the_ranker_refuses_when_one_of_its_generators_does():
    reason = RankerRecommender(label_days=4, generators=["ease"], generator_params={"ease": {"max_items": 5}}).refuses(
        community_data()
    )
    assert reason.startswith("its candidate generator ease refuses: EASE needs a dense 20 x 20 matrix")


def test_no_model_learns_from_no_interactions():
    empty = Interactions.from_frame(community_walks().iloc[:0], item_ids=np.array(["i00"], dtype=object))
    assert ALSRecommender().refuses(empty) == "no interactions to learn from"
