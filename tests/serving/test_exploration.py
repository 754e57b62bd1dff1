"""Exploration (serving/exploration.py): the logged propensity is the probability the item is shown there."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from pipelines.experiments.off_policy import LoggedSlates, evaluate
from serving.exploration import EXPLORE_REASON, explore, pool_size, propensity_of_ranked, swapped_slots
from tests.serving.test_impressions import landed, logging_client
from tests.serving.test_variants import home, live  # noqa: F401 - fixtures

RANKED = np.array([4, 7, 1], dtype=np.int64)


def test_the_logged_propensities_are_the_frequencies_the_policy_shows_items_with():
    """Monte Carlo over the policy itself: each (slot, item)'s share of 40,000 draws matches its propensity."""
    n_items, epsilon, draws = 12, 0.3, 40_000
    blocked = np.zeros(n_items, dtype=bool)
    blocked[[0, 2]] = True
    excluded = np.array([3], dtype=np.int32)
    rng = random.Random(7)
    shown_count: Counter = Counter()
    propensity_of: dict = {}
    for _ in range(draws):
        slots = swapped_slots(len(RANKED), epsilon, rng.random)
        rows, _, propensities = explore(RANKED, np.ones(3), n_items, blocked, excluded, epsilon, slots, rng)
        for slot, (row, p) in enumerate(zip(rows.tolist(), propensities.tolist(), strict=True)):
            shown_count[slot, row] += 1
            propensity_of[slot, row] = p
            assert row not in (0, 2, 3)  # never a blocked or excluded item
        assert len(set(rows.tolist())) == 3  # no item twice in a slate
    pool = n_items - 2 - 1 - 3
    assert pool_size(n_items, RANKED, blocked, excluded) == pool
    for (slot, row), count in shown_count.items():
        expected = 1 - epsilon if row == RANKED[slot] else epsilon / pool
        assert propensity_of[slot, row] == pytest.approx(expected)
        assert count / draws == pytest.approx(expected, abs=4 * np.sqrt(expected * (1 - expected) / draws))


def test_with_epsilon_zero_nothing_changes_and_every_propensity_is_one():
    rows, scores, propensities = explore(RANKED, np.ones(3), 100, None, None, 0.0, swapped_slots(3, 0.0))
    assert rows is RANKED and list(propensities) == [1.0, 1.0, 1.0]
    assert propensity_of_ranked(100, 3, 0.0) == 1.0


def test_a_pool_smaller_than_the_slate_explores_nothing():
    rows, _, propensities = explore(RANKED, np.ones(3), 5, None, None, 0.5, [0, 1, 2])
    assert rows is RANKED and list(propensities) == [1.0] * 3
    assert propensity_of_ranked(5, 3, 0.5) == 1.0 and propensity_of_ranked(6, 3, 0.5) == 0.5


def test_served_answers_show_and_log_the_explored_slate_with_its_propensities(home, live):  # noqa: F811
    epsilon = 0.5
    with logging_client(home, exploration_epsilon=epsilon) as client:
        answers = [client.get(f"/v1/users/{u}/recommendations", params={"k": 5}).json() for u in live.user_ids[:80]]
        answers += [client.get("/v1/users/never-seen/recommendations", params={"k": 5}).json()]
    rows = landed(home).set_index("request_id")
    explored = 0
    for body in answers:
        logged = rows.loc[body["request_id"]]
        assert list(logged["item_ids"]) == [i["item_id"] for i in body["items"]]
        pool = len(live.item_ids) - len(body["items"])
        for item, p in zip(body["items"], logged["propensities"], strict=True):
            explored += item["reason"] == EXPLORE_REASON
            assert p == pytest.approx(epsilon / pool if item["reason"] == EXPLORE_REASON else 1 - epsilon)
    assert 0 < explored < sum(len(b["items"]) for b in answers)
    # what off-policy evaluation reads (one contract): it accepts the logged propensities as they are
    flat = rows.explode(["item_ids", "propensities"])
    flat["position"] = flat.groupby(level=0).cumcount() + 1
    logs = LoggedSlates(
        cluster=flat["user_id"].to_numpy(), position=flat["position"].to_numpy(), item=flat["item_ids"].to_numpy(),
        propensity=flat["propensities"].to_numpy(dtype=float), clicked=np.zeros(len(flat)),
    )  # fmt: skip
    assert evaluate(logs, target_item=flat["item_ids"].to_numpy())
