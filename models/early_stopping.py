"""Early stopping for iteratively trained models (BPR, SASRec) on a validation window cut from their own data.

Why: BPR and SASRec overfit after a data-dependent number of epochs (BPR on ml-100k peaks near 50
epochs and falls back to a third of its best NDCG@10 by 300), so a fixed epoch count is either
too few or too many. The number of epochs is chosen on a validation window cut from the
interactions ``fit`` is given, never from anything later: in a backtest those are the fold's
training data, so the validation window ends before the fold's test period starts.

- With interaction times (``last_ts``) the window is the latest ``share`` of the interaction cells
  by time (a global cut, like the evaluation's split: no user's history holds anyone's future).
- Without them, a seeded random ``share`` of the cells.

The model trains on the history before the window, is scored on the window every few epochs
(NDCG@k, seen items excluded), and stops after ``patience`` evaluations without improvement; the
caller then refits on all its interactions for the best epoch count, so the latest days are not
thrown away.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from models.dataset import Interactions
from models.metrics import hits_matrix, ndcg_at_k

log = logging.getLogger(__name__)

# Fewer validation users than this and NDCG@k is noise: early stopping would stop at random.
MIN_VALIDATION_USERS = 20
# More than this are a seeded sample of them. The window is scored every few epochs, each time over
# all its users x all items: on a 100k-user, 20k-item fold that was most of BPR's 103 s fit. Early
# stopping only compares one epoch count with another; the mean NDCG@10 of 5,000 users has a standard
# error near 0.003 there, well below the gains it tells apart.
MAX_VALIDATION_USERS = 5_000
# While the best evaluation is still the first one, patience does not stop a training before this share of its
# epochs (see EpochSearch.record).
WARM_UP_SHARE = 0.25


@dataclass(frozen=True)
class ValidationWindow:
    """History to train on, the held-out cells to score on, and which of the window's users are scored."""

    history: Interactions
    relevant: sp.csr_matrix  # users x items, 1 where a held-out item is new to the user's history
    users: np.ndarray  # user indices with history and at least one relevant item
    cutoff_ts: float | None  # the window's start (epoch seconds) when cut by time, else None

    def ndcg(self, score_users: Callable[[np.ndarray], np.ndarray], k: int = 10, batch_size: int = 1024) -> float:
        """Mean NDCG@k over the window's users of dense scores from ``score_users`` (history items excluded)."""
        seen = self.history.matrix
        values = []
        for start in range(0, len(self.users), batch_size):
            batch = self.users[start : start + batch_size]
            scores = np.array(score_users(batch), dtype=np.float32, copy=True)
            scores[seen[batch].nonzero()] = -np.inf
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
            top = np.take_along_axis(top, order, axis=1)
            relevant = self.relevant[batch]
            n_relevant = np.diff(relevant.indptr)
            values.append(ndcg_at_k(hits_matrix(top, relevant), n_relevant, k))
        return float(np.concatenate(values).mean())


def validation_window(
    interactions: Interactions, share: float, random_state: int, max_users: int = MAX_VALIDATION_USERS
) -> ValidationWindow | None:
    """The validation window (see the module docstring), or None if it would hold too few users to decide on.

    Above ``max_users`` scored users, a seeded uniform sample of them is scored (the window itself,
    and so the history the model trains on, is the same either way)."""
    if not 0 < share < 1:
        raise ValueError(f"validation share must be in (0, 1), got {share}")
    matrix = interactions.matrix.tocsr()
    if interactions.last_ts is not None and interactions.last_ts.nnz:
        cutoff = float(np.quantile(interactions.last_ts.data, 1.0 - share))
        history, held = interactions.split_at(cutoff)
        held_matrix = held.matrix
    else:
        cutoff = None
        coo = matrix.tocoo()
        out = np.random.default_rng(random_state).random(coo.nnz) < share
        keep = sp.csr_matrix((coo.data[~out], (coo.row[~out], coo.col[~out])), shape=matrix.shape)
        held_matrix = sp.csr_matrix((coo.data[out], (coo.row[out], coo.col[out])), shape=matrix.shape)
        history = Interactions(interactions.user_ids, interactions.item_ids, keep, None, interactions.item_features)
    relevant = (held_matrix > 0).astype(np.float32).tocsr()
    relevant = (relevant - relevant.multiply(history.matrix > 0)).tocsr()
    relevant.eliminate_zeros()
    users = np.flatnonzero((np.diff(relevant.indptr) > 0) & (np.diff(history.matrix.tocsr().indptr) > 0))
    if len(users) < MIN_VALIDATION_USERS:
        return None
    if len(users) > max_users:
        users = np.sort(np.random.default_rng(random_state).choice(users, size=max_users, replace=False))
    return ValidationWindow(history, relevant, users, cutoff)


@dataclass
class EpochSearch:
    """The validation curve of one early-stopped training: (epochs, NDCG@k) pairs, and where it peaked."""

    every: int
    patience: int
    max_epochs: int
    curve: list[tuple[int, float]] = field(default_factory=list)

    @property
    def best_epochs(self) -> int:
        if not self.curve:
            return self.max_epochs
        return max(self.curve, key=lambda point: (point[1], -point[0]))[0]

    @property
    def warm_up_epochs(self) -> int:
        return math.ceil(WARM_UP_SHARE * self.max_epochs)

    def record(self, epochs: int, score: float) -> bool:
        """Add one evaluation; True when training should stop (no gain in ``patience`` evaluations, or done).

        Not while the first evaluation is still the best and the warm-up (``WARM_UP_SHARE`` of the epochs)
        is not over: a barely trained model scores what its initialisation gives, and at a small step the
        next epochs often score below it before they rise. SASRec at step 1.1e-4 on ml-latest-small: 0.0168
        after one epoch, 0.0117, 0.0076, 0.0083, then 0.037 at 10 and 0.081 at 56; patience counted from
        the first stopped it at epoch 4 and kept a near-random model (NDCG@10 0.004 on the test part
        against 0.193 when trained on; benchmarks/README.md). Past the first evaluation nothing changes.
        """
        self.curve.append((epochs, score))
        since_best = sum(1 for e, _ in self.curve if e > self.best_epochs)
        still_at_first = self.best_epochs == self.curve[0][0] and epochs < self.warm_up_epochs
        return (since_best >= self.patience and not still_at_first) or epochs >= self.max_epochs
