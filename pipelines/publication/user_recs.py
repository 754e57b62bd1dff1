"""Write ``user_recs.parquet`` batch by batch, and keep what the manifest and the audit need as it goes.

Each batch of scored users (:func:`models.lists.stored.list_batches`, in the order of their ids)
is turned into Arrow arrays by integer lookups (user index -> id, item index -> id and
items.parquet row, reason code -> reason string) and appended to one Parquet file as its own row
groups. Memory is bounded by one batch whatever the number of users; the file's columns and types
are the contract's (``serving/format.py``), the same a one-shot write produced.

Users who withheld consent are dropped per batch. The counts (users, rows, reasons per kind) are
sums over batches, and the audit's input, the top ``eval_k`` item indices of every user (a small
integer matrix), is filled in per batch: the totals equal those of the whole lists at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from models.lists.stored import REASON_MODEL, REASON_POPULAR, REASON_SIMILAR, ListBatch, reason_names
from serving.format import USER_RECS_COLUMNS

log = logging.getLogger(__name__)

ARROW_TYPES = {"string": pa.string(), "int16": pa.int16(), "int32": pa.int32(), "float32": pa.float32()}
USER_RECS_SCHEMA = pa.schema([pa.field(name, ARROW_TYPES[kind]) for name, kind in USER_RECS_COLUMNS])
REASON_KINDS = {REASON_MODEL: "model", REASON_POPULAR: "popular", REASON_SIMILAR: "similar_to"}


@dataclass
class ListsWritten:
    """What writing the lists counted, for the manifest, the log and the audit."""

    users: int = 0  # users with at least one row
    rows: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # rows per kind of reason
    consent_dropped_rows: int = 0
    recommended: np.ndarray | None = None  # model users x eval_k item indices (-1 = none): the audit's input


def write_user_recs(
    path: Path,
    batches: Iterable[ListBatch],
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    item_rows: np.ndarray,
    withheld: np.ndarray,
    eval_k: int,
) -> ListsWritten:
    """Append every batch's lists to `path`; rows come out sorted by user id then rank when batches are in id order.

    `item_rows` maps a model item index to its row in items.parquet, `withheld` masks the model users
    whose lists are left out (consent), `eval_k` is how deep the audit looks.
    """
    user_array = pa.array(np.asarray(user_ids).astype(str), type=pa.string())
    item_array = pa.array(np.asarray(item_ids).astype(str), type=pa.string())
    reason_array = pa.array(reason_names(item_ids), type=pa.string())
    item_rows = np.asarray(item_rows, dtype=np.int32)
    written = ListsWritten(recommended=np.full((len(user_ids), eval_k), -1, dtype=np.int64))
    kinds = np.zeros(len(REASON_KINDS), dtype=np.int64)
    started, scored = time.perf_counter(), 0
    with pq.ParquetWriter(path, USER_RECS_SCHEMA) as writer:
        for batch in batches:
            scored += len(batch.users)
            kept = ~withheld[batch.users]
            ranked = batch.top.ranked
            written.consent_dropped_rows += int((ranked[~kept] >= 0).sum())
            depth = min(eval_k, ranked.shape[1])
            written.recommended[batch.users[kept], :depth] = ranked[kept, :depth]
            rows, slots = np.nonzero((ranked >= 0) & kept[:, None])
            items = ranked[rows, slots]
            reasons = batch.reasons[rows, slots]
            kinds += np.bincount(np.minimum(reasons, REASON_SIMILAR), minlength=len(REASON_KINDS))
            written.users += len(np.unique(rows))
            written.rows += len(rows)
            columns = {
                "user_id": user_array.take(pa.array(batch.users[rows])),
                "rank": pa.array((slots + 1).astype(np.int16)),
                "item_id": item_array.take(pa.array(items)),
                "score": pa.array(batch.top.scores[rows, slots].astype(np.float32)),
                "reason": reason_array.take(pa.array(reasons)),
                "item_row": pa.array(item_rows[items]),
            }
            writer.write_table(pa.Table.from_pydict(columns, schema=USER_RECS_SCHEMA))
            log.info(
                "lists: %d/%d users scored, %d rows written, %.0f s",
                scored, len(user_ids), written.rows, time.perf_counter() - started,
            )  # fmt: skip
    written.reasons = {
        REASON_KINDS[code]: int(count) for code, count in sorted(enumerate(kinds), key=lambda pair: -pair[1]) if count
    }
    return written
