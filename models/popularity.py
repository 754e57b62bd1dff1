"""Popularity: every user gets the items the most users interacted with.

The baseline every personalised model must beat, and the fallback for users we do not know.
"""

from __future__ import annotations

import numpy as np

from models.base import Recommender
from models.dataset import Interactions


class PopularityRecommender(Recommender):
    name = "popularity"

    def _fit(self, interactions: Interactions) -> None:
        # Distinct users per item: one heavy user cannot make an item "popular".
        self.item_scores = np.asarray((interactions.matrix > 0).sum(axis=0)).ravel().astype(np.float32)

    def _score(self, user_index: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.item_scores, (len(user_index), len(self.item_scores)))

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"item_scores": self.item_scores}

    def _load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.item_scores = arrays["item_scores"]
