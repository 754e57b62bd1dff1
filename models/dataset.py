"""Interactions as a sparse user x item matrix with the id maps that give it meaning.

Models and metrics work on integer indices; only this module translates ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.columns import Columns


@dataclass(frozen=True)
class Interactions:
    user_ids: np.ndarray  # index -> external user id
    item_ids: np.ndarray  # index -> external item id
    matrix: sp.csr_matrix  # users x items, summed weights

    @classmethod
    def from_frame(
        cls, frame: pd.DataFrame, item_ids: np.ndarray | None = None, user_ids: np.ndarray | None = None
    ) -> Interactions:
        """Build from rows of (user_id, item_id, weight). Unknown ids are dropped when maps are given."""
        users = np.asarray(user_ids if user_ids is not None else np.unique(frame[Columns.User]), dtype=object)
        items = np.asarray(item_ids if item_ids is not None else np.unique(frame[Columns.Item]), dtype=object)
        user_index = pd.Index(users)
        item_index = pd.Index(items)
        rows = user_index.get_indexer(frame[Columns.User])
        cols = item_index.get_indexer(frame[Columns.Item])
        keep = (rows >= 0) & (cols >= 0)
        weights = frame[Columns.Weight].to_numpy(dtype=np.float32)[keep]
        matrix = sp.csr_matrix((weights, (rows[keep], cols[keep])), shape=(len(users), len(items)))
        matrix.sum_duplicates()
        return cls(users, items, matrix)

    @property
    def n_users(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_items(self) -> int:
        return self.matrix.shape[1]

    def user_index(self, user_ids) -> np.ndarray:
        """Indices of the given users; -1 for users this data set has never seen."""
        return pd.Index(self.user_ids).get_indexer(pd.Index(list(user_ids)))

    def item_index(self, item_ids) -> np.ndarray:
        return pd.Index(self.item_ids).get_indexer(pd.Index(list(item_ids)))

    def aligned(self, other_users: np.ndarray) -> sp.csr_matrix:
        """This matrix's rows re-ordered to `other_users` (empty rows for users not in it)."""
        index = self.user_index(other_users)
        present = index >= 0
        mapping = sp.csr_matrix(
            (np.ones(present.sum(), dtype=np.float32), (np.flatnonzero(present), index[present])),
            shape=(len(other_users), self.n_users),
        )
        return (mapping @ self.matrix).tocsr()
