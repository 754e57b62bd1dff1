"""Item-based nearest neighbours (Sarwar et al. 2001) through ``implicit``: cosine and BM25.

Each item keeps its ``neighbours`` most similar items; a user's score for an item is the sum of
its similarities to the items the user has. Cosine is the classic; BM25 down-weights very active
users and very popular items before the dot product, which usually ranks better on
implicit feedback.
"""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np
import scipy.sparse as sp

from models.base import Recommender
from models.dataset import Interactions
from models.ease import top_k_rows
from models.search import FloatRange, IntRange, SearchSpace

log = logging.getLogger(__name__)


class ItemKNNRecommender(Recommender):
    """Shared scoring and persistence of the item-kNN variants; subclasses choose the similarity.

    Parameters
    ----------
    neighbours : similar items kept per item (``K`` in ``implicit``).
    """

    def __init__(self, neighbours: int = 100, random_state: int = 0):
        super().__init__(random_state)
        self.neighbours = neighbours

    def params(self) -> dict:
        return {"neighbours": self.neighbours, "random_state": self.random_state}

    @classmethod
    def search_space(cls) -> SearchSpace:
        """How many neighbours each item keeps trades noise against reach."""
        return {"neighbours": IntRange(5, 500, log=True)}

    def _make(self):
        raise NotImplementedError

    per_user_state = ("user_weights",)  # each user's weighted history

    def _fit(self, interactions: Interactions) -> None:
        started = time.perf_counter()
        # log1p, as for ALS: repeated purchases count, but with diminishing returns.
        weights = interactions.matrix.copy()
        weights.data = np.log1p(weights.data)
        model = self._make()
        with warnings.catch_warnings():
            # implicit's own weighting hands a COO matrix to its kNN and then warns about it.
            warnings.filterwarnings("ignore", message="Method expects CSR input")
            model.fit(weights, show_progress=False)
        self.similarity = model.similarity.tocsr().astype(np.float32)
        self.user_weights = weights.astype(np.float32)
        log.info(
            "%s: %d item neighbourhoods (%d similarities) in %.1fs",
            self.name,
            interactions.n_items,
            self.similarity.nnz,
            time.perf_counter() - started,
        )

    def _score(self, user_index: np.ndarray) -> np.ndarray:
        return (self.user_weights[user_index] @ self.similarity).toarray()

    def similar_items(self, item_index: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Items by their stored similarity to the given items (zero outside the neighbourhood)."""
        self._check_fitted()
        return top_k_rows(self.similarity[item_index].toarray(), item_index, k)

    def _arrays(self) -> dict[str, np.ndarray]:
        sim, users = self.similarity, self.user_weights
        return {
            "sim_data": sim.data,
            "sim_indices": sim.indices,
            "sim_indptr": sim.indptr,
            "user_data": users.data,
            "user_indices": users.indices,
            "user_indptr": users.indptr,
        }

    def _load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        shape = (len(self.user_ids), len(self.item_ids))
        self.similarity = sp.csr_matrix(
            (arrays["sim_data"], arrays["sim_indices"], arrays["sim_indptr"]), shape=(shape[1], shape[1])
        )
        self.user_weights = sp.csr_matrix(
            (arrays["user_data"], arrays["user_indices"], arrays["user_indptr"]), shape=shape
        )


class CosineItemKNNRecommender(ItemKNNRecommender):
    """Item-kNN on cosine similarity of the items' user vectors."""

    name = "itemknn_cosine"

    def _make(self):
        from implicit.nearest_neighbours import CosineRecommender

        return CosineRecommender(K=self.neighbours, num_threads=2)


class BM25ItemKNNRecommender(ItemKNNRecommender):
    """Item-kNN on BM25-weighted co-occurrence.

    Parameters
    ----------
    k1 : BM25 saturation of a user's weight.
    b : BM25 length normalisation (how much very active users are discounted).
    """

    name = "itemknn_bm25"

    def __init__(self, neighbours: int = 100, k1: float = 1.2, b: float = 0.75, random_state: int = 0):
        super().__init__(neighbours, random_state)
        self.k1, self.b = k1, b

    def params(self) -> dict:
        return {**super().params(), "k1": self.k1, "b": self.b}

    @classmethod
    def search_space(cls) -> SearchSpace:
        """BM25's saturation and length normalisation on top of the neighbourhood size."""
        return {**super().search_space(), "k1": FloatRange(0.3, 3.0), "b": FloatRange(0.0, 1.0)}

    def _make(self):
        from implicit.nearest_neighbours import BM25Recommender

        return BM25Recommender(K=self.neighbours, K1=self.k1, B=self.b, num_threads=2)
