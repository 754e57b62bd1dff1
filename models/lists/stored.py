"""The lists a publication stores: the champion's top N per known user after the business rules.

The rules themselves (exclusions, cold-user blend, MMR, category cap) are applied by
:func:`models.lists.ranked.ranked_lists`, the same function offline evaluation scores, so the
published lists are the evaluated ones. This module adds what only publication needs: purchases
made since the model's snapshot as further exclusions, a reason per item, the DataFrames the
publication writes, and the fallback list for unknown users.

Reasons: ``popular`` (the item came from the popularity side of a cold blend, or the champion is
the popularity model), ``similar_to:<item>`` (the user's own history item that is closest to it by
the model's item embeddings, when that cosine reaches `reason_min_similarity`), else ``model``.
They are computed as small integer codes into :func:`reason_names` (``model``, ``popular``, then
one ``similar_to:<item>`` per item), so a batch of a publication never holds millions of strings.

Publication scores users in batches (:func:`list_batches`), in the order of their id strings, so
the batches come out in the order the lists file is sorted in and memory is bounded by one batch.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from itertools import islice

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.base import Recommender
from models.columns import Columns
from models.lists.ranked import MODEL, POPULAR, Candidates, ListRules, cold_users, ranked_lists
from models.lists.rules import allowed_and_categories, history_anchors, popularity_fallback, seller_codes
from models.popularity import distinct_users_per_item

log = logging.getLogger(__name__)


def excluded_matrix(model: Recommender, purchased: pd.DataFrame | None) -> sp.csr_matrix:
    """What each user must never get back: the training interactions plus every purchase or rating."""
    seen = model.seen.tocsr().astype(np.float32)
    if purchased is None or purchased.empty:
        return seen
    rows = pd.Index(model.user_ids).get_indexer(purchased[Columns.User])
    cols = pd.Index(model.item_ids).get_indexer(purchased[Columns.Item])
    keep = (rows >= 0) & (cols >= 0)
    bought = sp.csr_matrix((np.ones(keep.sum(), dtype=np.float32), (rows[keep], cols[keep])), shape=seen.shape)
    return ((seen + bought) > 0).astype(np.float32).tocsr()


REASON_MODEL, REASON_POPULAR, REASON_SIMILAR = 0, 1, 2  # codes; REASON_SIMILAR + i = similar_to item i


def reason_names(item_ids: np.ndarray) -> np.ndarray:
    """The reason string of every code: ``model``, ``popular``, then ``similar_to:<item>`` per item index."""
    return np.concatenate([["model", "popular"], "similar_to:" + np.asarray(item_ids).astype(str).astype(object)])


def reason_codes(
    model: Recommender, candidates: Candidates, rules: ListRules, users: np.ndarray | None = None
) -> np.ndarray:
    """The reason code of every slot (see the module docstring for when each applies).

    Row r of `candidates` belongs to ``users[r]`` (indices into ``model.user_ids``; default: every
    user in order).
    """
    code = np.where(candidates.source == POPULAR, REASON_POPULAR, REASON_MODEL).astype(np.int32)
    if model.name == "popularity":
        code[:] = REASON_POPULAR
        return code
    vectors = model.item_embeddings
    if vectors is None:
        return code
    seen = model.seen
    users = np.arange(seen.shape[0]) if users is None else np.asarray(users, dtype=np.int64)
    histories = [seen.indices[seen.indptr[u] : seen.indptr[u + 1]] for u in users]
    anchors = history_anchors(candidates.ranked, histories, vectors, rules.reason_min_similarity)
    explained = (anchors >= 0) & (candidates.source == MODEL)
    code[explained] = REASON_SIMILAR + anchors[explained]
    return code


def reasons(
    model: Recommender,
    candidates: Candidates,
    item_ids: np.ndarray,
    rules: ListRules,
    users: np.ndarray | None = None,
) -> np.ndarray:
    """The reason string of every slot: :func:`reason_codes` spelled out (``similar_to`` names from `item_ids`)."""
    return reason_names(item_ids)[reason_codes(model, candidates, rules, users)]


@dataclass
class ListInputs:
    """What every batch of lists is scored against: the catalog's reading and each user's exclusions."""

    allowed: np.ndarray
    categories: np.ndarray
    excluded: sp.csr_matrix
    sellers: np.ndarray | None

    @classmethod
    def of(cls, model: Recommender, items: pd.DataFrame, purchased: pd.DataFrame | None = None) -> ListInputs:
        allowed, categories = allowed_and_categories(model.item_ids, items)
        return cls(allowed, categories, excluded_matrix(model, purchased), seller_codes(model.item_ids, items))


@dataclass
class ListBatch:
    """The lists of some users: row r of `top` and `reasons` belongs to model user ``users[r]``."""

    users: np.ndarray
    top: Candidates
    reasons: np.ndarray  # reason codes (see reason_names)


def lists_of(model: Recommender, users: np.ndarray, rules: ListRules, inputs: ListInputs) -> ListBatch:
    """Top-N of these users after the business rules (:func:`ranked_lists`), with their reason codes."""
    users = np.asarray(users, dtype=np.int64)
    top = ranked_lists(model, users, rules, inputs.allowed, inputs.categories, inputs.excluded, sellers=inputs.sellers)
    return ListBatch(users, top, reason_codes(model, top, rules, users))


def users_by_id(model: Recommender) -> np.ndarray:
    """Model user indices in the order of their id strings: the order the lists file is sorted in."""
    return np.argsort(np.asarray(model.user_ids).astype(str), kind="stable")


def list_batches(
    model: Recommender, rules: ListRules, inputs: ListInputs, batch_users: int, workers: int = 1
) -> Iterator[ListBatch]:
    """The lists of every known user, `batch_users` at a time, in the order of their ids.

    With `workers` > 1 the batches are scored in that many forked processes and still yielded in id
    order. Within one process only the product and the top-k use a second core; the rules' per-user
    work (cold blend, category cap, reasons) is numpy and Python on one, so one process keeps about 1.5
    of 2 cores busy. The workers read the model and the inputs the parent already holds (fork shares
    them, copy on write) and each runs BLAS and the top-k on one thread: the processes are the
    parallelism. One BLAS thread sums a product in another order than several, so a score can differ
    in its last bits from a one-process run (as it can between batch sizes) and two items that close
    can swap; a one-process run limited to one BLAS thread gives exactly the workers' lists.
    At most two batches per worker are in flight, so memory is bounded by those batches' lists.
    """
    if batch_users < 1:
        raise ValueError(f"batch_users must be >= 1, got {batch_users}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    order = users_by_id(model)
    starts = range(0, len(order), batch_users)
    if workers == 1 or len(starts) < 2:
        for start in starts:
            yield lists_of(model, order[start : start + batch_users], rules, inputs)
        return
    yield from _batches_in_workers(model, rules, inputs, order, batch_users, starts, min(workers, len(starts)))


_FORKED: tuple | None = None  # what the forked workers read (see _batches_in_workers)


def _batches_in_workers(
    model: Recommender,
    rules: ListRules,
    inputs: ListInputs,
    order: np.ndarray,
    batch_users: int,
    starts: range,
    workers: int,
) -> Iterator[ListBatch]:
    global _FORKED  # noqa: PLW0603  (set before the pool forks its workers, cleared after)
    _FORKED = (model, rules, inputs, order, batch_users)
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=_one_thread_each)
    waiting = iter(starts)
    try:
        pending = deque((start, pool.submit(_batch_at, start)) for start in islice(waiting, 2 * workers))
        while pending:
            start, future = pending.popleft()
            try:
                batch = future.result()
            except BrokenProcessPool as error:
                last = min(start + batch_users, len(order)) - 1
                raise RuntimeError(
                    f"a list worker process died while scoring users {model.user_ids[order[start]]!r} to "
                    f"{model.user_ids[order[last]]!r} (places {start}-{last} of {len(order)} in id order; killed, "
                    f"e.g. out of memory: fewer publish_workers or a smaller publish_batch_users need less)"
                ) from error
            for following in islice(waiting, 1):
                pending.append((following, pool.submit(_batch_at, following)))
            yield batch
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        _FORKED = None


def _one_thread_each() -> None:
    """A forked worker's setup: BLAS and the top-k on one thread each, as the processes are the parallelism."""
    from threadpoolctl import threadpool_limits

    import models.base

    models.base.TOP_K_THREADS = 1
    threadpool_limits(1)


def _batch_at(start: int) -> ListBatch:
    model, rules, inputs, order, batch_users = _FORKED
    return lists_of(model, order[start : start + batch_users], rules, inputs)


def build_lists(
    model: Recommender, items: pd.DataFrame, rules: ListRules, purchased: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Top-N per known user and the popularity fallback, both after the business rules, as DataFrames.

    All users at once, in the model's order: for tests and small analyses. Publication writes the
    same lists batch by batch (:func:`list_batches`).
    """
    inputs = ListInputs.of(model, items, purchased)
    users = np.arange(len(model.user_ids))
    lists = lists_of(model, users, rules, inputs)
    top = lists.top
    rows, ranks = np.nonzero(top.ranked >= 0)
    user_recs = pd.DataFrame(
        {
            Columns.User: model.user_ids[rows].astype(str),
            Columns.Rank: (ranks + 1).astype(np.int16),
            Columns.Item: model.item_ids[top.ranked[rows, ranks]].astype(str),
            Columns.Score: top.scores[rows, ranks].astype(np.float32),
            Columns.Reason: reason_names(model.item_ids)[lists.reasons[rows, ranks]].astype(str),
        }
    )
    cold = int(cold_users(model, users, rules).sum())
    log.info("lists: %d users (%d cold, blended with popularity), mmr=%s", len(users), cold, rules.mmr_enabled)
    return user_recs, fallback_list(model, inputs.allowed, inputs.categories, rules)


def fallback_list(model: Recommender, allowed: np.ndarray, categories: np.ndarray, rules: ListRules) -> pd.DataFrame:
    """The list for users the publication does not know: most popular allowed items, category-capped."""
    popularity = distinct_users_per_item(model.seen)
    top = popularity_fallback(popularity, rules.top_n, allowed, categories, rules.category_cap, rules.category_cap_head)
    top = top[top >= 0]
    return pd.DataFrame(
        {
            Columns.Rank: np.arange(1, len(top) + 1, dtype=np.int16),
            Columns.Item: model.item_ids[top].astype(str),
            Columns.Score: popularity[top],
            Columns.Reason: "popular",
        }
    )
