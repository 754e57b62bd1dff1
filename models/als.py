"""Implicit-feedback ALS (Hu, Koren and Volinsky 2008) through the `implicit` library."""

from __future__ import annotations

from typing import Self

import numpy as np
import pandas as pd

from models.base import Recommender
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
    warm_starts = True

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
        # Set by fit_from for one fit: the factors to start from and the sweeps to run from there.
        self._start: tuple[np.ndarray, np.ndarray, int] | None = None
        self.sweeps_from_start: int | None = None  # after a fit: the sweeps it ran from a start, None if from scratch

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

    def fit_from(self, interactions: Interactions, start: Recommender, sweeps: int) -> Self:
        """Fit starting from ``start``'s factors, matched by id, for ``sweeps`` sweeps (at most ``iterations``).

        ALS refines whatever factors it starts from; started from a fit of the same recipe on all but
        the last days it needs a few sweeps, not ``iterations`` from random numbers, to settle on the new
        data (benchmarks/warm_start.py measures how close it gets). Users and items ``start`` never saw
        begin as a fit from scratch begins them. A ``start`` of another algorithm or size, or
        ``sweeps`` < 1, gives a fit from scratch.
        """
        usable = isinstance(start, ALSRecommender) and start.is_fitted and start.factors == self.factors
        if not usable or sweeps < 1:
            return self.fit(interactions)
        rng = np.random.default_rng(self.random_state)
        users = carried_over(start.user_ids, start.user_factors, interactions.user_ids, rng)
        items = carried_over(start.item_ids, start.item_factors, interactions.item_ids, rng)
        self._start = (users, items, min(sweeps, self.iterations))
        try:
            return self.fit(interactions)
        finally:
            self._start = None

    def loss(self, interactions: Interactions) -> float:
        """ALS's objective (implicit's, lower is better) of this model's factors on `interactions` (same ids)."""
        from implicit.cpu import _als

        self._check_fitted()
        if not (
            np.array_equal(self.user_ids, interactions.user_ids)
            and np.array_equal(self.item_ids, interactions.item_ids)
        ):
            raise ValueError("the interactions' users or items are not this model's: fit on them first")
        weights = (self.alpha * confidence(interactions)).astype(np.float32)
        return float(
            _als.calculate_loss(weights, self.user_factors, self.item_factors, self.regularization, num_threads=2)
        )

    def _fit_factors(self, interactions: Interactions) -> tuple[np.ndarray, np.ndarray]:
        from implicit.cpu.als import AlternatingLeastSquares

        weights = confidence(interactions)
        sweeps = self.iterations if self._start is None else self._start[2]
        model = AlternatingLeastSquares(
            factors=self.factors,
            regularization=self.regularization,
            iterations=sweeps,
            alpha=self.alpha,
            random_state=self.random_state,
            num_threads=2,
        )
        if self._start is not None:  # implicit starts from factors already set (and sized to the matrix)
            model.user_factors, model.item_factors = self._start[0], self._start[1]
        self.sweeps_from_start = None if self._start is None else sweeps
        model.fit(weights, show_progress=False, callback=EpochLogger(self.name, sweeps))
        return model.user_factors, model.item_factors


def confidence(interactions: Interactions):
    """The matrix ALS learns from: log1p of the weights, so a heavy purchaser does not dominate the confidence scale."""
    weights = interactions.matrix.copy()
    weights.data = np.log1p(weights.data)
    return weights


def carried_over(
    known_ids: np.ndarray, known_factors: np.ndarray, ids: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Factor rows for ``ids``: the known row where the id is known, else small random numbers as implicit draws them.

    A writeable C-contiguous float32 array, as implicit's solvers update it in place.
    """
    rows = pd.Index(np.asarray(known_ids, dtype=object)).get_indexer(np.asarray(ids, dtype=object))
    factors = rng.random((len(ids), known_factors.shape[1]), dtype=np.float32) * np.float32(0.01)
    known = rows >= 0
    factors[known] = known_factors[rows[known]]
    return factors
