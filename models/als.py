"""Implicit-feedback ALS (Hu, Koren and Volinsky 2008) through the `implicit` library."""

from __future__ import annotations

import numpy as np

from models.dataset import Interactions
from models.factorization import EpochLogger, FactorizationRecommender
from models.search import FloatRange, IntRange, SearchSpace


class ALSRecommender(FactorizationRecommender):
    """Matrix factorisation by alternating least squares.

    Parameters
    ----------
    factors : latent dimensions.
    regularization : L2 penalty on the factors.
    iterations : ALS sweeps.
    alpha : confidence scale for observed interactions (confidence = 1 + alpha * weight).
    """

    name = "als"

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.05,
        iterations: int = 20,
        alpha: float = 20.0,
        random_state: int = 0,
    ):
        super().__init__(random_state)
        self.factors, self.regularization, self.iterations, self.alpha = factors, regularization, iterations, alpha

    def params(self) -> dict:
        return {
            "factors": self.factors,
            "regularization": self.regularization,
            "iterations": self.iterations,
            "alpha": self.alpha,
            "random_state": self.random_state,
        }

    @classmethod
    def search_space(cls) -> SearchSpace:
        """Size, penalty and confidence scale matter most; sweeps beyond ~40 rarely change the ranking."""
        return {
            "factors": IntRange(8, 256, log=True),
            "regularization": FloatRange(1e-3, 10.0, log=True),
            "alpha": FloatRange(1.0, 100.0, log=True),
            "iterations": IntRange(5, 40),
        }

    def _fit_factors(self, interactions: Interactions) -> tuple[np.ndarray, np.ndarray]:
        from implicit.cpu.als import AlternatingLeastSquares

        # log1p keeps a heavy purchaser from dominating the confidence scale.
        weights = interactions.matrix.copy()
        weights.data = np.log1p(weights.data)
        model = AlternatingLeastSquares(
            factors=self.factors,
            regularization=self.regularization,
            iterations=self.iterations,
            alpha=self.alpha,
            random_state=self.random_state,
            num_threads=2,
        )
        model.fit(weights, show_progress=False, callback=EpochLogger(self.name, self.iterations))
        return model.user_factors, model.item_factors
