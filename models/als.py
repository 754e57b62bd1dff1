"""Implicit-feedback ALS (Hu, Koren and Volinsky 2008) through the `implicit` library."""

from __future__ import annotations

import numpy as np

from models.base import Recommender
from models.dataset import Interactions


class ALSRecommender(Recommender):
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

    def _fit(self, interactions: Interactions) -> None:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        # log1p keeps a heavy purchaser from dominating the confidence scale.
        weights = interactions.matrix.copy()
        weights.data = np.log1p(weights.data)
        # implicit parallelises itself; a second BLAS thread pool underneath only thrashes.
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                iterations=self.iterations,
                alpha=self.alpha,
                random_state=self.random_state,
                num_threads=2,
            )
            model.fit(weights, show_progress=False)
        self.user_factors = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors = np.asarray(model.item_factors, dtype=np.float32)

    def _score(self, user_index: np.ndarray) -> np.ndarray:
        return self.user_factors[user_index] @ self.item_factors.T

    @property
    def item_embeddings(self) -> np.ndarray:
        return self.item_factors

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors, "item_factors": self.item_factors}

    def _load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.user_factors, self.item_factors = arrays["user_factors"], arrays["item_factors"]
