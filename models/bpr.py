"""Bayesian Personalised Ranking (Rendle et al. 2009) through the `implicit` library.

BPR optimises the order of a seen item over a sampled unseen one, which is what a top-k
list is judged on; ALS fits the confidence-weighted matrix instead. Weights are ignored
(every interaction is a positive), as ``implicit``'s BPR does.
"""

from __future__ import annotations

import numpy as np

from models.dataset import Interactions
from models.factorization import EpochLogger, FactorizationRecommender
from models.search import FloatRange, IntRange, SearchSpace


class BPRRecommender(FactorizationRecommender):
    """Matrix factorisation trained with the BPR pairwise loss by SGD.

    Parameters
    ----------
    factors : latent dimensions (``implicit`` adds one more for the item bias).
    learning_rate : SGD step.
    regularization : L2 penalty on the factors.
    iterations : passes over the interactions.
    """

    name = "bpr"

    def __init__(
        self,
        factors: int = 64,
        learning_rate: float = 0.05,
        regularization: float = 0.01,
        iterations: int = 100,
        random_state: int = 0,
    ):
        super().__init__(random_state)
        self.factors, self.learning_rate = factors, learning_rate
        self.regularization, self.iterations = regularization, iterations

    def params(self) -> dict:
        return {
            "factors": self.factors,
            "learning_rate": self.learning_rate,
            "regularization": self.regularization,
            "iterations": self.iterations,
            "random_state": self.random_state,
        }

    @classmethod
    def search_space(cls) -> SearchSpace:
        """SGD is sensitive to its step and penalty by orders of magnitude, hence log scales."""
        return {
            "factors": IntRange(8, 256, log=True),
            "learning_rate": FloatRange(1e-3, 0.3, log=True),
            "regularization": FloatRange(1e-4, 0.1, log=True),
            "iterations": IntRange(20, 400, log=True),
        }

    def _fit_factors(self, interactions: Interactions) -> tuple[np.ndarray, np.ndarray]:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        # One thread: implicit's multi-threaded SGD updates race (Hogwild), so two runs with the
        # same seed would differ. The data sets it is meant for fit in seconds on one core.
        model = BayesianPersonalizedRanking(
            factors=self.factors,
            learning_rate=self.learning_rate,
            regularization=self.regularization,
            iterations=self.iterations,
            random_state=self.random_state,
            num_threads=1,
        )
        model.fit(interactions.matrix, show_progress=False, callback=EpochLogger(self.name, self.iterations, every=20))
        return model.user_factors, model.item_factors
