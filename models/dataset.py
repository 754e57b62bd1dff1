"""Interactions as a sparse user x item matrix with the id maps that give it meaning.

Models and metrics work on integer indices; only this module translates ids.

Time-aware models (recent popularity, the two-stage ranker, SASRec) also need *when* each
user last touched each item, and the ranker needs a few item attributes. Both are optional
so that code which only has (user, item, weight) keeps working unchanged:

- ``last_ts``: a CSR matrix with the same sparsity pattern as ``matrix`` holding the
  last-interaction time of each cell in epoch seconds (the ``last_ts`` of
  ``marts.interactions``). Epoch seconds rather than datetimes because models do arithmetic
  on them and scipy cannot hold datetimes.
- ``first_ts``: the same for the *first* interaction of each cell, where the source has it (the
  event log, a frame of events). A cell whose first interaction is before a cutoff and whose last
  is after it straddles the cutoff: the user already knew the item, so the ranker keeps it in the
  history it learns from instead of making it a label (``split_first_met``).
- ``item_features``: a DataFrame aligned row-for-row with ``item_ids`` with any of
  ``category`` (string), ``price`` (float) and ``created_at`` (epoch seconds). Static item
  attributes only: counts such as ``events_7d`` from ``marts.item_features`` are computed on the
  whole log and would leak the future into a model trained as of an earlier cutoff.
- ``catalog``: every catalog item that existed at the data's reference time, indexed by item id,
  with its content (any of title, description, category, price, attributes). Unlike
  ``item_features`` it includes items nobody interacted with: content models
  (``models/content.py``) give those items vectors.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.columns import Columns

ITEM_FEATURE_COLUMNS = (Columns.Category, Columns.Price, Columns.CreatedAt)


def to_epoch_seconds(values) -> np.ndarray:
    """Timestamps (datetime64, pandas Timestamps with or without zone, or numbers) as float epoch seconds."""
    series = pd.Series(values)
    if pd.api.types.is_numeric_dtype(series):
        return series.to_numpy(dtype=np.float64)
    stamps = pd.to_datetime(series, utc=True)
    seconds = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    return seconds.to_numpy(dtype=np.float64)


@dataclass(frozen=True)
class Interactions:
    user_ids: np.ndarray  # index -> external user id
    item_ids: np.ndarray  # index -> external item id
    matrix: sp.csr_matrix  # users x items, summed weights
    last_ts: sp.csr_matrix | None = None  # users x items, last interaction (epoch seconds), same pattern as matrix
    item_features: pd.DataFrame | None = None  # one row per item index: category, price, created_at
    catalog: pd.DataFrame | None = None  # catalog items existing at the reference time, by item id: content
    first_ts: sp.csr_matrix | None = None  # users x items, first interaction (epoch seconds), pattern of last_ts

    def __post_init__(self):
        if self.last_ts is not None and self.last_ts.shape != self.matrix.shape:
            raise ValueError(f"last_ts has shape {self.last_ts.shape}, the interaction matrix {self.matrix.shape}")
        if self.first_ts is not None and (self.last_ts is None or self.first_ts.shape != self.matrix.shape):
            raise ValueError("first_ts needs last_ts and the interaction matrix's shape")
        if self.item_features is not None and len(self.item_features) != len(self.item_ids):
            raise ValueError(f"item_features has {len(self.item_features)} rows for {len(self.item_ids)} items")

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        item_ids: np.ndarray | None = None,
        user_ids: np.ndarray | None = None,
        item_features: pd.DataFrame | None = None,
        catalog: pd.DataFrame | None = None,
    ) -> Interactions:
        """Build from rows of (user_id, item_id, weight[, last_ts]).

        Unknown ids are dropped when maps are given. Repeated (user, item) rows are merged:
        weights summed, ``last_ts`` the latest (and ``first_ts`` the earliest), so the rows of
        ``marts.interactions_split`` can be passed as they are. ``item_features`` (indexed or keyed
        by ``item_id``) is aligned to the item map; items it lacks get missing values.
        """
        missing = {Columns.User, Columns.Item, Columns.Weight} - set(frame.columns)
        if missing:
            raise ValueError(f"interactions frame lacks column(s) {sorted(missing)}; it has {list(frame.columns)}")
        users = np.asarray(user_ids if user_ids is not None else np.unique(frame[Columns.User]), dtype=object)
        items = np.asarray(item_ids if item_ids is not None else np.unique(frame[Columns.Item]), dtype=object)
        rows = pd.Index(users).get_indexer(frame[Columns.User])
        cols = pd.Index(items).get_indexer(frame[Columns.Item])
        keep = (rows >= 0) & (cols >= 0)
        shape = (len(users), len(items))
        weights = frame[Columns.Weight].to_numpy(dtype=np.float32)[keep]
        matrix = sp.csr_matrix((weights, (rows[keep], cols[keep])), shape=shape)
        matrix.sum_duplicates()
        last_ts = first_ts = None
        if Columns.LastTs in frame.columns:
            cells = pd.DataFrame({"r": rows[keep], "c": cols[keep], "t": to_epoch_seconds(frame[Columns.LastTs])[keep]})
            if cells["t"].isna().any():
                raise ValueError(f"{int(cells['t'].isna().sum())} interaction rows have no {Columns.LastTs}")
            span = cells.groupby(["r", "c"], sort=False)["t"].agg(["min", "max"])
            at = (span.index.get_level_values(0), span.index.get_level_values(1))
            last_ts = sp.csr_matrix((span["max"].to_numpy(), at), shape=shape)
            first_ts = sp.csr_matrix((span["min"].to_numpy(), at), shape=shape)
            last_ts.sort_indices()
            first_ts.sort_indices()
        aligned = None if item_features is None else align_item_features(item_features, items)
        content = None if catalog is None else catalog_content(catalog)
        return cls(users, items, matrix, last_ts, aligned, content, first_ts)

    @property
    def n_users(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_items(self) -> int:
        return self.matrix.shape[1]

    @property
    def max_ts(self) -> float:
        """The latest interaction time (epoch seconds): the 'now' of this data set."""
        return float(self.require_time().data.max()) if self.require_time().nnz else 0.0

    def require_time(self) -> sp.csr_matrix:
        """The last-interaction matrix, or a clear error for models that cannot work without it."""
        if self.last_ts is None:
            raise ValueError(
                f"these interactions carry no {Columns.LastTs}: build them with Interactions.from_frame "
                f"from a frame that has a {Columns.LastTs} column (marts.interactions has one)"
            )
        return self.last_ts

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

    # --- time slicing (same id maps, so indices stay comparable across the pieces)
    def split_at(self, cutoff_ts: float) -> tuple[Interactions, Interactions]:
        """(cells last touched before ``cutoff_ts``, cells last touched at or after it).

        Both halves keep every user and item index. A cell is one aggregated (user, item) row,
        so an item the user first met before the cutoff and again after it counts as *after*:
        it is withheld from the history rather than leaked from the future into it.
        """
        before = _earlier_than(self.require_time(), cutoff_ts)
        return self._masked(before), self._masked(_complement(before))

    def _masked(self, mask: sp.csr_matrix) -> Interactions:
        """Only the cells where the 0/1 mask (same pattern as ``last_ts``) is 1."""
        first_ts = None if self.first_ts is None else _kept(self.first_ts, mask)
        return replace(self, matrix=_kept(self.matrix, mask), last_ts=_kept(self.last_ts, mask), first_ts=first_ts)

    def split_first_met(self, cutoff_ts: float) -> tuple[Interactions, Interactions]:
        """(cells first met before ``cutoff_ts``, cells first met at or after it): who knew what by then.

        Unlike ``split_at``, a cell that straddles the cutoff (met before, touched again after)
        is history, not future: the user knew the item. Its time in the history is its first
        touch (the last one before the cutoff is unknown, and later ones must not leak); its weight
        is the cell's, later touches included (an aggregate cannot be split: what the history must
        hold is that the user knew the item). Without ``first_ts`` this is ``split_at``.
        """
        if self.first_ts is None:
            return self.split_at(cutoff_ts)
        met = _earlier_than(self.first_ts, cutoff_ts)
        before, after = self._masked(met), self._masked(_complement(met))
        straddling = _complement(_earlier_than(before.last_ts, cutoff_ts))  # touched again at or after the cutoff
        clipped = (before.last_ts - before.last_ts.multiply(straddling) + before.first_ts.multiply(straddling)).tocsr()
        clipped.sort_indices()
        return replace(before, last_ts=clipped), after

    def item_feature(self, column: str) -> np.ndarray | None:
        """One item attribute as an array aligned to item indices, or None if absent."""
        if self.item_features is None or column not in self.item_features.columns:
            return None
        return self.item_features[column].to_numpy()


def _earlier_than(times: sp.csr_matrix, cutoff_ts: float) -> sp.csr_matrix:
    """0/1 over the cells of `times` (epoch seconds): 1 where the time is before `cutoff_ts`."""
    mask = times.copy()
    mask.data = (mask.data < cutoff_ts).astype(np.float64)
    return mask


def _kept(matrix: sp.csr_matrix, mask: sp.csr_matrix) -> sp.csr_matrix:
    """`matrix` on the cells where the 0/1 `mask` is 1, without stored zeros."""
    kept = matrix.multiply(mask).tocsr()
    kept.eliminate_zeros()
    return kept


def _complement(mask: sp.csr_matrix) -> sp.csr_matrix:
    flipped = mask.copy()
    flipped.data = 1.0 - flipped.data
    return flipped


CONTENT_COLUMNS = ("title", "description", Columns.Category, Columns.Price, "attributes")


def catalog_content(catalog: pd.DataFrame, reference_ts: float | None = None) -> pd.DataFrame:
    """The content columns of a catalog, indexed by item id; with ``reference_ts``, only items created by then.

    An item with no ``created_at`` counts as existing (MovieLens gives none): a catalog lists what
    is on offer, and the log cannot tell when such an item arrived.
    """
    frame = catalog.set_index(Columns.Item) if Columns.Item in catalog.columns else catalog
    if frame.index.has_duplicates:
        raise ValueError(f"catalog has {int(frame.index.duplicated().sum())} duplicated item ids")
    if reference_ts is not None and Columns.CreatedAt in frame.columns:
        created = to_epoch_seconds(frame[Columns.CreatedAt])
        frame = frame[~(created > reference_ts)]
    content = frame[[c for c in CONTENT_COLUMNS if c in frame.columns]].copy()
    content.index = pd.Index(content.index.astype(str), dtype=object, name=Columns.Item)
    return content


def align_item_features(item_features: pd.DataFrame, item_ids: np.ndarray) -> pd.DataFrame:
    """Item attributes re-indexed to ``item_ids``; ``created_at`` converted to epoch seconds."""
    frame = item_features.set_index(Columns.Item) if Columns.Item in item_features.columns else item_features
    frame = frame[[c for c in ITEM_FEATURE_COLUMNS if c in frame.columns]]
    if frame.index.has_duplicates:
        raise ValueError(f"item_features has {int(frame.index.duplicated().sum())} duplicated item ids")
    frame = frame.reindex(pd.Index(item_ids, dtype=object)).reset_index(drop=True)
    if Columns.CreatedAt in frame.columns:
        frame[Columns.CreatedAt] = to_epoch_seconds(frame[Columns.CreatedAt])
    if Columns.Price in frame.columns:
        frame[Columns.Price] = frame[Columns.Price].astype(np.float64)
    return frame
