"""The middle layer of matrix-factorisation models: scores are dot products of factors.

ALS and BPR differ only in how they learn the factors; recommending, item embeddings and
persistence are the same, so they live here once. Subclasses implement ``_fit_factors``.
"""

from __future__ import annotations

import logging
import time
from abc import abstractmethod

import numpy as np
import scipy.sparse as sp

from models.base import Recommender
from models.bounded_top_k import bounded_top_k
from models.dataset import Interactions

log = logging.getLogger(__name__)

BOUNDED_MIN_ITEMS = 20_000  # from this catalog size up, ``recommend`` skips items out of a user's reach


class FactorizationRecommender(Recommender):
    """A recommender whose score for (user, item) is ``user_factors[u] @ item_factors[i]``."""

    user_factors: np.ndarray
    item_factors: np.ndarray
    per_user_state = ("user_factors",)

    def _fit(self, interactions: Interactions) -> None:
        import scipy.linalg.cython_blas  # noqa: F401  (loads the BLAS implicit's kernels call, see below)
        from threadpoolctl import threadpool_limits

        # implicit parallelises itself; a second BLAS thread pool underneath only thrashes (and
        # implicit warns about it). threadpool_limits only reaches libraries already loaded, and
        # scipy's own OpenBLAS (not numpy's) is loaded by implicit's first import: loading it
        # above puts it under the limit too.
        with threadpool_limits(1, "blas"):
            users, items = self._fit_factors(interactions)
        self.user_factors = np.ascontiguousarray(users, dtype=np.float32)
        self.item_factors = np.ascontiguousarray(items, dtype=np.float32)

    @abstractmethod
    def _fit_factors(self, interactions: Interactions) -> tuple[np.ndarray, np.ndarray]:
        """(user factors, item factors) learnt from the interactions."""

    def _score(self, user_index: np.ndarray) -> np.ndarray:
        return self.user_factors[user_index] @ self.item_factors.T

    def _top_k_of_users(
        self,
        user_index: np.ndarray,
        k: int,
        seen: sp.csr_matrix | None,
        allowed_items: np.ndarray | None,
        batch_size: int | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Large catalogs: only the items whose factor norm can reach a user's k-th score (the same lists).

        Below ``BOUNDED_MIN_ITEMS``, or with an explicit `batch_size`, every item is scored as the base class does.
        """
        if len(self.item_ids) < BOUNDED_MIN_ITEMS or batch_size is not None:
            return super()._top_k_of_users(user_index, k, seen, allowed_items, batch_size)
        user_seen = None if seen is None else seen[user_index]
        return bounded_top_k(self.user_factors[user_index], self.item_factors, k, user_seen, allowed_items)

    @property
    def item_embeddings(self) -> np.ndarray:
        return self.item_factors

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors, "item_factors": self.item_factors}

    def _load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.user_factors, self.item_factors = arrays["user_factors"], arrays["item_factors"]


class EpochLogger:
    """An ``implicit`` fit callback that logs every ``every``-th iteration and the last one."""

    def __init__(self, model_name: str, iterations: int, every: int = 5):
        self.model_name, self.iterations, self.every = model_name, iterations, every
        self.started = time.perf_counter()

    def __call__(self, iteration: int, *_progress) -> None:
        done = iteration + 1
        if done % self.every == 0 or done == self.iterations:
            log.info(
                "%s: iteration %d/%d, %.1fs", self.model_name, done, self.iterations, time.perf_counter() - self.started
            )
