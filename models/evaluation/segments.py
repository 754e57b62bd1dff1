"""Who and what a metric is restricted to: user activity segments and new items.

Activity segment of a user = the number of distinct items in the user's *training* data of the fold
(what the model had to go on), with the warehouse's bounds: cold < ``cold_below`` (5), casual up to
``power_above`` (50) inclusive, power above it. A user with no training history at all is cold and
gets the popularity fallback, as serving gives an unknown user.

New items = training items whose first event in the log falls within ``new_item_days`` before the
fold's cutoff: the items that most need a model that does not simply echo history. Items first seen in
the log's own first ``new_item_days`` are never new (their history may predate the log). Items first seen
after the cutoff are new too when the catalog already listed them at the cutoff (``Fold.unknown_is_new``):
nobody had touched them, so only a content model (``models/content.py``) can recommend them, and
counting them for every model is what makes the new-item metrics measure cold start. Other items first
seen after the cutoff only count in the denominators (see ``models.evaluation.splits``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.evaluation.splits import Fold

SEGMENTS = ("cold", "casual", "power")


@dataclass(frozen=True)
class SegmentBounds:
    cold_below: int = 5
    power_above: int = 50

    def __post_init__(self):
        if not 0 < self.cold_below <= self.power_above:
            raise ValueError(
                f"segment bounds must satisfy 0 < cold_below <= power_above, got {self.cold_below}, {self.power_above}"
            )

    def label(self, n_items: np.ndarray) -> np.ndarray:
        """Segment name per user from the number of distinct training items."""
        return np.where(n_items < self.cold_below, "cold", np.where(n_items > self.power_above, "power", "casual"))


def history_sizes(fold: Fold) -> np.ndarray:
    """Distinct training items of each evaluated user (0 for users without training history)."""
    per_user = np.diff(fold.train.matrix.indptr)
    return np.where(fold.train_rows >= 0, per_user[np.maximum(fold.train_rows, 0)], 0)


def segment_masks(fold: Fold, bounds: SegmentBounds) -> dict[str, np.ndarray]:
    """Boolean row mask over the fold's evaluated users, per segment."""
    labels = bounds.label(history_sizes(fold))
    return {name: labels == name for name in SEGMENTS}


def new_item_relevance(fold: Fold, relevant=None, new_columns: np.ndarray | None = None):
    """The held-out matrix restricted to new items (users without one get an empty row).

    ``relevant`` and ``new_columns`` default to the fold's own; pass ``Fold.columns_for``'s to
    restrict a content model's re-ordered matrix.
    """
    relevant = fold.relevant if relevant is None else relevant
    keep = (fold.new_columns if new_columns is None else new_columns).astype(np.float32)
    restricted = relevant.multiply(keep[None, :]).tocsr()
    restricted.eliminate_zeros()
    return restricted
