"""Popularity: every user gets the items the most users interacted with.

The baseline every personalised model must beat, and the fallback for users we do not know.
Two flavours: all-time, and a recent window, which follows trends and new items in a shop
whose catalogue moves (and is the harder baseline there).
"""

from __future__ import annotations

import numpy as np

from models.base import Recommender
from models.dataset import Interactions
from models.search import FloatRange, SearchSpace

SECONDS_PER_DAY = 86_400.0


def distinct_users_per_item(matrix) -> np.ndarray:
    """Distinct users per item: one heavy user cannot make an item "popular"."""
    return np.asarray((matrix > 0).sum(axis=0)).ravel().astype(np.float32)


class PopularityRecommender(Recommender):
    name = "popularity"

    def _fit(self, interactions: Interactions) -> None:
        self.item_scores = distinct_users_per_item(interactions.matrix)

    def _score(self, user_index: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.item_scores, (len(user_index), len(self.item_scores)))

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"item_scores": self.item_scores}

    def _load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.item_scores = arrays["item_scores"]


class RecentPopularityRecommender(PopularityRecommender):
    """Distinct users per item within the last ``window_days`` before the data's latest interaction.

    Items with equal recent counts (most often: none in the window) are ordered by all-time
    popularity, which is added as a fraction below one so it never outranks a recent user.

    Parameters
    ----------
    window_days : length of the recent window, in days.
    """

    name = "popularity_recent"

    def __init__(self, window_days: float = 7.0, random_state: int = 0):
        super().__init__(random_state)
        if window_days <= 0:
            raise ValueError(f"window_days must be positive, got {window_days}")
        self.window_days = window_days

    def params(self) -> dict:
        return {"window_days": self.window_days, "random_state": self.random_state}

    @classmethod
    def search_space(cls) -> SearchSpace:
        """How far back "recent" reaches depends on how fast the catalogue moves."""
        return {"window_days": FloatRange(1.0, 60.0, log=True)}

    def refuses(self, interactions: Interactions) -> str | None:
        if interactions.last_ts is None:
            return "recent popularity needs interaction times (last_ts); these interactions carry none"
        return super().refuses(interactions)

    def _fit(self, interactions: Interactions) -> None:
        last_ts = interactions.require_time()
        recent = last_ts.copy()
        recent.data = (recent.data > interactions.max_ts - self.window_days * SECONDS_PER_DAY).astype(np.float32)
        recent_users = distinct_users_per_item(recent)
        all_time = distinct_users_per_item(interactions.matrix)
        self.item_scores = (recent_users + all_time / (all_time.max(initial=0.0) + 1.0)).astype(np.float32)
