"""Ranking metrics over whole-catalog top-k lists, vectorised per batch of users.

Inputs are integer matrices: ``recommended`` (users x k item indices, -1 = empty
slot) and ``relevant`` (a users x items sparse matrix of held-out interactions).
Each metric gives one value per user; ``calc_metrics`` averages them.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def hits_matrix(recommended: np.ndarray, relevant: sp.csr_matrix) -> np.ndarray:
    """Boolean (users x k): is the item in this slot among the user's held-out items?"""
    rows = np.repeat(np.arange(recommended.shape[0]), recommended.shape[1])
    cols = recommended.ravel()
    valid = cols >= 0
    hits = np.zeros(rows.shape, dtype=bool)
    hits[valid] = np.asarray(relevant[rows[valid], cols[valid]]).ravel() > 0
    return hits.reshape(recommended.shape)


def ndcg_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits[:, :k] * discounts[: hits[:, :k].shape[1]]).sum(axis=1)
    ideal_len = np.minimum(n_relevant, k)
    idcg = np.concatenate([[0.0], np.cumsum(discounts)])[ideal_len]
    return np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0)


def recall_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    found = hits[:, :k].sum(axis=1)
    return np.divide(found, n_relevant, out=np.zeros(len(found)), where=n_relevant > 0)


def calc_metrics(recommended: np.ndarray, relevant: sp.csr_matrix, ndcg_k: int = 10, recall_k: int = 50) -> dict:
    """Mean NDCG@ndcg_k and Recall@recall_k over users with at least one held-out item."""
    n_relevant = np.asarray((relevant > 0).sum(axis=1)).ravel()
    users = np.flatnonzero(n_relevant > 0)
    hits = hits_matrix(recommended[users], relevant[users])
    return {
        f"ndcg_at_{ndcg_k}": float(ndcg_at_k(hits, n_relevant[users], ndcg_k).mean()) if len(users) else 0.0,
        f"recall_at_{recall_k}": float(recall_at_k(hits, n_relevant[users], recall_k).mean()) if len(users) else 0.0,
        "n_eval_users": int(len(users)),
    }
