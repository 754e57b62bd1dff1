"""The one interface every recommender shares.

Subclasses implement ``_fit`` and ``_score`` (dense scores for a batch of users);
``recommend`` does the rest the same way for all of them: batching, filtering seen
and excluded items, and top-k selection. Models know nothing of Airflow or MLflow.
"""

from __future__ import annotations

import json
import os
import zipfile
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import Self

import numpy as np
import scipy.sparse as sp

from models.dataset import Interactions
from models.search import SearchSpace

_REGISTRY: dict[str, type[Recommender]] = {}

try:  # the compiled selection (models/_topk.c); absent where the install had no C compiler
    from models._topk import top_k_into as _compiled_top_k
except ImportError:  # pragma: no cover - the numpy path below gives the same answer
    _compiled_top_k = None

SCORE_BLOCK = 6_000_000  # scores (float32) per block of users in ``recommend``
CHUNKS_PER_K = 32  # top_k cuts rows into this many chunks per k (measured best at 100k items)
SORT_COLUMNS_PER_K = 16  # rows of at most this many columns per list slot are sorted whole, not selected
TOP_K_THREADS = max(1, min(4, os.cpu_count() or 1))  # the compiled selection runs without the GIL
ROWS_PER_THREAD = 16  # below this many rows per thread, one thread is quicker than handing out work


@cache
def _selection_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(TOP_K_THREADS, thread_name_prefix="recforge-top-k")


# A forked child inherits the parent's pool object but none of its threads: work handed to it would wait forever.
# The child makes its own pool on first use instead (publication's list workers fork; so may an executor).
os.register_at_fork(after_in_child=_selection_pool.cache_clear)


def top_k(
    dense: np.ndarray, k: int, allowed: np.ndarray | None = None, compiled: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the `k` largest finite scores of `dense` and their columns, best first, ties by column.

    Slots beyond a row's finite scores hold column -1 and score -inf. `allowed`, a boolean mask over
    columns, leaves the others out (the numpy path writes -inf into `dense` for them). Exact either way:
    - compiled (``models/_topk.c``, when built, for catalogs above 16 k): one pass per row against a
      k-slot heap, without the GIL, rows shared among ``TOP_K_THREADS`` threads;
    - numpy: rather than sorting or partitioning whole rows, the rows are cut into ~32k chunks, and the
      k-th largest chunk maximum bounds the row's k-th largest score from below (k chunks hold a score
      at least that high), so only the chunks whose maximum reaches it (about k of them) are searched,
      leaving about k candidates per row.
    ``compiled=False`` forces the numpy path (the tests compare the two).
    """
    n_rows, n_cols = dense.shape
    k = min(k, n_cols)
    items = np.full((n_rows, k), -1, dtype=np.int64)
    scores = np.full((n_rows, k), -np.inf, dtype=np.float32)
    if n_rows == 0 or k == 0:
        return items, scores
    if compiled and _compiled_top_k is not None and n_cols > SORT_COLUMNS_PER_K * k:
        _select_compiled(np.ascontiguousarray(dense, dtype=np.float32), k, allowed, items, scores)
        return items, scores
    if allowed is not None:
        dense[:, ~allowed] = -np.inf
    if n_cols <= SORT_COLUMNS_PER_K * k:  # a small catalog: sort whole rows
        order = np.argsort(-dense, axis=1, kind="stable")[:, :k]  # NaN sorts last
        top_scores = np.take_along_axis(dense, order, axis=1).astype(np.float32, copy=False)
        unselectable = ~(top_scores > -np.inf)  # -inf or NaN
        order[unselectable], top_scores[unselectable] = -1, -np.inf
        return order, top_scores
    width = max(1, n_cols // (CHUNKS_PER_K * k))
    starts = np.arange(0, n_cols, width)
    chunk_max = np.fmax.reduceat(dense, starts, axis=1)  # fmax: a NaN score neither wins nor spoils a chunk
    bound = np.partition(chunk_max, len(starts) - k, axis=1)[:, len(starts) - k]
    rows, chunks = np.nonzero(chunk_max >= bound[:, None])
    cols = starts[chunks][:, None] + np.arange(width)
    inside = cols < n_cols
    rows, cols = np.broadcast_to(rows[:, None], cols.shape)[inside], cols[inside]
    values = dense[rows, cols]
    keep = (values >= bound[rows]) & (values > -np.inf)
    rows, cols, values = rows[keep], cols[keep], values[keep]
    order = np.lexsort((cols, -values, rows))
    rows, cols, values = rows[order], cols[order], values[order]
    position = np.arange(len(rows)) - np.searchsorted(rows, np.arange(n_rows))[rows]
    top = position < k
    items[rows[top], position[top]] = cols[top]
    scores[rows[top], position[top]] = values[top]
    return items, scores


def _select_compiled(
    dense: np.ndarray, k: int, allowed: np.ndarray | None, items: np.ndarray, scores: np.ndarray
) -> None:
    """The compiled selection into `items` and `scores`, split by rows among the selection threads."""
    penalty = None if allowed is None else np.where(allowed, np.float32(0), np.float32(-np.inf))
    n_rows, n_cols = dense.shape
    threads = min(TOP_K_THREADS, max(1, n_rows // ROWS_PER_THREAD))
    bounds = np.linspace(0, n_rows, threads + 1).astype(int)

    def select(start: int, stop: int) -> None:
        _compiled_top_k(dense[start:stop], stop - start, n_cols, k, penalty, items[start:stop], scores[start:stop])

    if threads == 1:
        select(0, n_rows)
        return
    for done in [_selection_pool().submit(select, a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]:
        done.result()


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez_compressed`` at zlib's fastest level: the same .npz file ``np.load`` reads.

    The default level spent a third of a minute on a million users' factors and history in every
    training (6% of a daily one) for no smaller a file: float factors hardly compress at any level,
    and the history's sorted rows compress as well at level 1 (benchmarks/README.md).
    """
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def algorithm(name: str) -> type[Recommender]:
    """The registered recommender class called ``name``."""
    if name not in _REGISTRY:
        raise ValueError(f"no recommender called {name!r}; known algorithms: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


class Recommender(ABC):
    """Base recommender.

    Parameters
    ----------
    random_state : int
        Seed for anything stochastic in fitting, so a run can be repeated.
    """

    name: str = "base"
    warm_starts: bool = False  # whether ``fit_from`` carries on from an earlier fit (else it fits from scratch)

    def __init__(self, random_state: int = 0):
        self.random_state = random_state
        self.is_fitted = False
        self.user_ids: np.ndarray = np.array([], dtype=object)
        self.item_ids: np.ndarray = np.array([], dtype=object)
        self.seen: sp.csr_matrix | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # Only concrete algorithms name themselves; shared middle layers stay out of the registry.
        if "name" in cls.__dict__:
            _REGISTRY[cls.name] = cls

    # --- fitting
    def fit(self, interactions: Interactions) -> Self:
        """Fit on a user x item interaction matrix; remembers what each user has seen."""
        self.user_ids, self.item_ids = interactions.user_ids, interactions.item_ids
        self.seen = (interactions.matrix > 0).astype(np.float32).tocsr()
        self._fit(interactions)
        self.is_fitted = True
        return self

    def fit_from(self, interactions: Interactions, start: Recommender, sweeps: int) -> Self:
        """Fit, starting from ``start`` (this recipe fitted on older data) for ``sweeps`` passes, where the model can.

        Training fits the chosen model on the whole log right after the backtest fitted the same
        recipe on the newest fold, which holds all but the last days: a model that learns iteratively
        (ALS) can carry on from there instead of from random numbers (``models/als.py``). This default
        fits from scratch: a model that cannot carry on loses nothing.
        """
        return self.fit(interactions)

    def refuses(self, interactions: Interactions) -> str | None:
        """Why this model cannot learn from these interactions, or None if it can.

        Training asks every candidate before fitting it, so a model the data cannot support (a
        catalog above EASE's size guard, no sequences for SASRec) is left out with this reason
        recorded, rather than failing mid-backtest or crashing the training. Subclasses extend it.
        """
        if interactions.matrix.nnz == 0:
            return "no interactions to learn from"
        return None

    @abstractmethod
    def _fit(self, interactions: Interactions) -> None: ...

    @abstractmethod
    def _score(self, user_index: np.ndarray) -> np.ndarray:
        """Dense scores, shape (len(user_index), n_items), for known users.

        ``recommend`` masks a writeable float32 result in place (it copies anything else, such as a
        read-only broadcast), so return a fresh array, never a view of the model's own state.
        """

    def params(self) -> dict:
        """Hyper-parameters, as logged to the tracking server."""
        return {"random_state": self.random_state}

    @classmethod
    def search_space(cls) -> SearchSpace:
        """Constructor parameters worth tuning and their ranges (``models/search.py``); none by default.

        Declared here, beside the model, so the ranges change with the model; the tuner in
        ``pipelines/training/tuning.py`` translates them for its sampler.
        """
        return {}

    # --- inference
    def recommend(
        self,
        user_index: np.ndarray,
        k: int,
        filter_seen: bool = True,
        allowed_items: np.ndarray | None = None,
        seen: sp.csr_matrix | None = None,
        batch_size: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item indices and scores for each user index.

        Parameters
        ----------
        user_index : indices into ``self.user_ids``.
        k : list length. Where fewer than k items are allowed, trailing slots hold index -1.
        filter_seen : drop items the user interacted with (``seen`` if given, else the training data).
        allowed_items : boolean mask over items; False items are never recommended (blocked, out of stock).
        batch_size : users scored per block (default: as many as fit ~24 MB of scores), which bounds
            memory whatever the number of users.

        Equal scores are ordered by item index, so a list does not depend on which users share its block.
        """
        self._check_fitted()
        user_index = np.asarray(user_index, dtype=np.int64)
        unknown = (user_index < 0) | (user_index >= len(self.user_ids))
        if unknown.any():
            # -1 is what Interactions.user_index returns for a user it has never seen; numpy would
            # silently read the last row instead. Callers route unknown users to the fallback list.
            raise ValueError(
                f"{int(unknown.sum())} user index(es) outside 0..{len(self.user_ids) - 1} "
                f"(e.g. {int(user_index[unknown][0])}): unknown users have no personal list; use the fallback"
            )
        seen = self.seen if seen is None else seen
        k = min(k, len(self.item_ids))
        return self._top_k_of_users(user_index, k, seen if filter_seen else None, allowed_items, batch_size)

    def _top_k_of_users(
        self,
        user_index: np.ndarray,
        k: int,
        seen: sp.csr_matrix | None,
        allowed_items: np.ndarray | None,
        batch_size: int | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``recommend``'s selection for checked users: every item scored, block by block of users.

        Middle layers whose scores have structure may select with less work, giving the same lists
        (``models/factorization.py`` skips items whose factor norm cannot reach a user's list; its scores
        can differ in their last bit, as BLAS rounds a product by the shape of its block).
        """
        items = np.full((len(user_index), k), -1, dtype=np.int64)
        scores = np.full((len(user_index), k), -np.inf, dtype=np.float32)
        if batch_size is None:
            # Blocks of ~24 MB of scores: small enough that the allocator reuses one block's memory
            # for the next (no page faults per block), large enough for an efficient matrix product.
            batch_size = max(1, SCORE_BLOCK // max(len(self.item_ids), 1))
        for start in range(0, len(user_index), batch_size):
            batch = np.asarray(user_index[start : start + batch_size])
            dense = self._score(batch)
            if not (dense.dtype == np.float32 and dense.flags.writeable and dense.flags.c_contiguous):
                dense = np.array(dense, dtype=np.float32, order="C")
            if seen is not None:
                rows = seen[batch]
                dense[rows.nonzero()] = -np.inf
            top, top_scores = top_k(dense, k, allowed_items)
            items[start : start + len(batch)] = top
            scores[start : start + len(batch)] = top_scores
        return items, scores

    @property
    def item_embeddings(self) -> np.ndarray | None:
        """Item vectors for similarity search, if the model has them."""
        return None

    def similar_items(self, item_index: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k most similar items by cosine of the item embeddings (the item itself excluded)."""
        vectors = self.item_embeddings
        if vectors is None:
            raise NotImplementedError(f"{self.name} has no item embeddings")
        normed = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        sims = normed[item_index] @ normed.T
        sims[np.arange(len(item_index)), item_index] = -np.inf
        top = np.argsort(-sims, axis=1)[:, :k]
        return top, np.take_along_axis(sims, top, axis=1)

    # --- forgetting (pipelines/privacy/forget.py)
    # Attributes whose first axis is the user (rows aligned with ``user_ids``): what forgetting a user cuts.
    per_user_state: tuple[str, ...] = ()

    def forget_users(self, user_ids) -> int:
        """Remove these users' rows from the fitted model (ids, seen items, per-user state); rows removed.

        Why not re-fit: the rest of the model stays exactly as evaluated and registered, and the
        forgotten user's row (their factors, their history) is what stores them; an unknown user then
        gets the fallback, as any user the model never saw.
        """
        self._check_fitted()
        forget = np.isin(self.user_ids.astype(str), np.asarray(list(user_ids), dtype=str))
        if not forget.any():
            return 0
        keep = ~forget
        self.user_ids = self.user_ids[keep]
        self.seen = self.seen[keep]
        self._forget_user_rows(keep)
        return int(forget.sum())

    def _forget_user_rows(self, keep: np.ndarray) -> None:
        """Keep only the `keep` rows of every attribute in ``per_user_state``; models with nested state extend it."""
        for name in self.per_user_state:
            value = getattr(self, name, None)
            if value is not None:
                setattr(self, name, value[keep])

    # --- persistence
    def _arrays(self) -> dict[str, np.ndarray]:
        return {}

    def _load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        return None

    def _save_files(self, directory: Path) -> None:
        """Write state that is not a numpy array (a LightGBM text model, a torch state_dict)."""
        return None

    def _load_files(self, directory: Path) -> None:
        """Read what ``_save_files`` wrote; called after ``_load_arrays``."""
        return None

    def save(self, directory: Path) -> Path:
        """Write the model as plain numpy arrays and a JSON header (no pickle)."""
        self._check_fitted()
        directory.mkdir(parents=True, exist_ok=True)
        seen = self.seen.tocoo()
        write_npz(
            directory / "model.npz",
            user_ids=self.user_ids.astype(str),
            item_ids=self.item_ids.astype(str),
            seen_row=seen.row,
            seen_col=seen.col,
            **self._arrays(),
        )
        self._save_files(directory)
        (directory / "model.json").write_text(json.dumps({"name": self.name, "params": self.params()}))
        return directory

    @staticmethod
    def load(directory: Path) -> Recommender:
        """Rebuild a saved model of any registered algorithm from its directory."""
        header = json.loads((directory / "model.json").read_text())
        cls = algorithm(header["name"])
        model = cls(**header["params"])
        with np.load(directory / "model.npz", allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        model.user_ids = arrays.pop("user_ids").astype(object)
        model.item_ids = arrays.pop("item_ids").astype(object)
        row, col = arrays.pop("seen_row"), arrays.pop("seen_col")
        model.seen = sp.csr_matrix(
            (np.ones(len(row), dtype=np.float32), (row, col)), shape=(len(model.user_ids), len(model.item_ids))
        )
        model._load_arrays(arrays)
        model._load_files(directory)
        model.is_fitted = True
        return model

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError(f"{self.name} model is not fitted")
