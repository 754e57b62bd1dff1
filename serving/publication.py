"""A publication loaded into compact arrays, verified before anyone can read it.

Per-user lists are held CSR-style: a sorted array of user ids (bytes), an offsets array, and
flat item-row / score / reason-code arrays, about 9-10 bytes per stored item. Looking a user up
is a binary search; there is no Python object per user or per list, so 1M users x 100 items
fit in about 1 GB and load in seconds (the parquet columns are decoded by Arrow, never row by
row in Python).
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

try:  # built by setup.py where a C compiler is available; the Python path writes the same bytes
    from serving import _fastpath
except ImportError:  # pragma: no cover - depends on the install
    _fastpath = None

from serving.format import FALLBACK, INDEX_FILE, ITEMS, MAX_TOP_N, USER_RECS, PublicationError, verify_version
from serving.ids import MAX_ID_LENGTH  # the id contract; also _fastpath.c's width limit

log = logging.getLogger(__name__)

__all__ = ["MAX_ID_LENGTH", "Publication", "PublicationError", "Recommendation"]


# The experiment fields of a recommendations answer outside any experiment; a routed answer replaces them.
NO_ARMS = b',"experiment":null,"variant":null'


def with_arms(body: bytes, arms: bytes) -> bytes:
    """The answer naming its experiment and variant (`arms` as made by ``arms_json``) instead of null.

    The first occurrence is the head's: it comes before the items, and no id can hold a quote."""
    return body.replace(NO_ARMS, arms, 1)


def arms_json(experiment: str, variant: str) -> bytes:
    return b',"experiment":' + orjson.dumps(experiment) + b',"variant":' + orjson.dumps(variant)


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    score: float
    reason: str


class Publication:
    """One immutable, verified publication. Readers may use it from any thread."""

    def __init__(self, directory: Path):
        started = time.perf_counter()
        self.directory = directory
        self.manifest = verify_version(directory)
        self.version: str = self.manifest["version"]
        self.top_n: int = int(self.manifest["top_n"])
        if not 1 <= self.top_n <= MAX_TOP_N:  # the API documents k's maximum as MAX_TOP_N
            raise PublicationError(f"{directory}: the manifest's top_n {self.top_n} is outside 1..{MAX_TOP_N}")

        items = pq.read_table(directory / ITEMS, columns=["item_id", "index_row"]).sort_by("index_row")
        self._items_arrow = items.column("item_id").combine_chunks().cast(pa.string())
        self.item_id_array = self._items_arrow  # row -> id as Arrow, for the impression log's batches
        self.item_ids: list[str] = self._items_arrow.to_pylist()  # row -> id, for building answers
        self.item_rows: dict[str, int] = {item: row for row, item in enumerate(self.item_ids)}
        if len(self.item_rows) != len(self.item_ids):
            raise PublicationError(f"{directory}: {ITEMS} repeats an item id")

        self._load_user_lists(directory / USER_RECS)

        fallback = pq.read_table(directory / FALLBACK, columns=["rank", "item_id", "score"]).sort_by("rank")
        self.fallback_items = self._rows_of(fallback.column("item_id"))
        self.fallback_scores = fallback.column("score").to_numpy().astype(np.float32)
        if not np.isfinite(self.fallback_scores).all():
            raise PublicationError(f"{directory}: fallback.parquet has a score that is not a finite number")

        import faiss

        self.index = faiss.read_index(str(directory / INDEX_FILE))
        if self.index.ntotal != len(self.item_ids):
            raise PublicationError(
                f"{directory}: item index holds {self.index.ntotal} vectors for {len(self.item_ids)} items"
            )
        self.index_spec: dict = self.manifest.get("item_index", {"type": "flat"})
        if self.index_spec.get("type") == "hnsw":
            faiss.downcast_index(self.index).hnsw.efSearch = int(self.index_spec["ef_search"])
        self._prepare_answers()
        self.fast_answer = self._fast_answer()
        self.load_seconds = time.perf_counter() - started
        self._blocked_for: frozenset[str] | None = None
        self._blocked_mask: np.ndarray | None = None

    # --- loading

    def _rows_of(self, item_ids: pa.ChunkedArray) -> np.ndarray:
        """Item rows for a column of item ids: one hash lookup per distinct id of each dictionary."""

        def lookup(dictionary: pa.Array) -> np.ndarray:
            mapping = pc.index_in(dictionary.cast(pa.string()), value_set=self._items_arrow)
            if mapping.null_count:
                unknown = dictionary.filter(pc.is_null(mapping))[0]
                raise PublicationError(f"{self.directory}: lists name item {unknown} that items.parquet does not have")
            return mapping.to_numpy(zero_copy_only=False).astype(np.int32)

        return _decode(item_ids, lookup, np.int32)

    def _item_rows(self, path: Path, recs: pa.Table) -> np.ndarray:
        """The publisher's `item_row` column, range-checked, and checked against `item_id` on the first row group.

        Decoding every id string would cost more than the rest of the load; the checksums already
        guarantee the file is the one the publisher wrote, so one row group confirms the columns agree.
        """
        rows = recs.column("item_row").to_numpy().astype(np.int32, copy=False)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self.item_ids)):
            raise PublicationError(f"{self.directory}: item_row outside 0..{len(self.item_ids) - 1}")
        first = pq.ParquetFile(path).read_row_group(0, columns=["item_id", "item_row"], use_threads=False)
        expected = self._rows_of(pa.chunked_array([first.column("item_id").combine_chunks()]))
        if not np.array_equal(expected, first.column("item_row").to_numpy()):
            raise PublicationError(f"{self.directory}: item_row does not match item_id in user_recs.parquet")
        return rows

    def _reason_codes(self, reasons: pa.ChunkedArray) -> tuple[list[str], np.ndarray]:
        """Reasons as small integer codes into one list of distinct reason strings."""
        names: dict[str, int] = {}

        def lookup(dictionary: pa.Array) -> np.ndarray:
            return np.array([names.setdefault(n, len(names)) for n in dictionary.to_pylist()], dtype=np.int32)

        codes = _decode(reasons, lookup, np.int32)
        return list(names), codes.astype(np.min_scalar_type(max(len(names) - 1, 0)))

    def _load_user_lists(self, path: Path) -> None:
        # Every string column is read dictionary-encoded: Arrow never materialises 100M strings,
        # and ids are resolved once per distinct value of each row group.
        with_rows = "item_row" in pq.read_schema(path).names
        recs = pq.read_table(
            path,
            columns=["user_id", "rank", "item_row" if with_rows else "item_id", "score", "reason"],
            read_dictionary=["user_id", "item_id", "reason"],
        )
        starts, user_ids = _user_runs(recs.column("user_id"))
        if not _sorted_by_user_and_rank(user_ids, starts, recs.column("rank").to_numpy()):
            # Publications are written sorted; an unsorted one still loads correctly, only slower.
            log.warning("%s is not sorted by user_id, rank: sorting it", path)
            plain = pa.schema(
                [pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type) for f in recs.schema]
            )
            recs = recs.cast(plain).sort_by([("user_id", "ascending"), ("rank", "ascending")])
            starts, user_ids = _user_runs(recs.column("user_id"))
        self.user_ids = np.asarray(user_ids, dtype=np.str_)
        self._user_id_width = self.user_ids.dtype.itemsize // 4  # characters of the longest id (UCS-4)
        self.offsets = np.append(starts, recs.num_rows).astype(np.int64)
        self.rec_items = self._item_rows(path, recs) if with_rows else self._rows_of(recs.column("item_id"))
        self.rec_scores = recs.column("score").to_numpy().astype(np.float32, copy=False)
        self.reason_names, self.rec_reasons = self._reason_codes(recs.column("reason"))
        if not np.isfinite(self.rec_scores).all():
            raise PublicationError(f"{self.directory}: user_recs.parquet has a score that is not a finite number")
        if np.diff(self.offsets).max(initial=0) > self.top_n:
            raise PublicationError(f"{self.directory}: a user has more than top_n={self.top_n} items")

    # --- facts

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def list_bytes(self) -> int:
        """Bytes held for the per-user lists (ids, offsets, items, scores, reasons, the fast path's id table)."""
        arrays = (self.user_ids, self.offsets, self.rec_items, self.rec_scores, self.rec_reasons)
        return int(sum(a.nbytes for a in arrays)) + self.fast_path_bytes

    @property
    def bytes_per_user(self) -> float:
        return self.list_bytes / max(self.n_users, 1)

    # --- lookups (all return (item rows, scores, reasons) for the answer builder)

    def blocked_mask(self, blocked: frozenset[str]) -> np.ndarray | None:
        """Mask over item rows of the server's blocklist (None when it blocks nothing here).

        Rebuilt only when the blocklist object changes, i.e. when the file changed.
        """
        if blocked is not self._blocked_for:
            rows = [self.item_rows[i] for i in blocked if i in self.item_rows]
            mask = np.zeros(len(self.item_ids), dtype=bool)
            mask[rows] = True
            self._blocked_mask, self._blocked_for = (mask if rows else None), blocked
        return self._blocked_mask

    def excluded_rows(self, item_ids) -> np.ndarray | None:
        """Rows of the given ids that this publication knows (others cannot be in any answer anyway)."""
        rows = [self.item_rows[i] for i in item_ids if i in self.item_rows]
        return np.array(rows, dtype=np.int32) if rows else None

    def user_position(self, user_id: str) -> int | None:
        # An id longer than the array's fixed width cannot be in it; searchsorted would first copy the
        # whole array into a wider dtype (4 ms per request at 200,000 users, for every such unknown user).
        if len(user_id) > self._user_id_width:
            return None
        pos = int(self.user_ids.searchsorted(user_id))  # the method: a quarter of np.searchsorted's overhead
        return pos if pos < len(self.user_ids) and self.user_ids[pos] == user_id else None

    def for_user(
        self, user_id: str, k: int, excluded: frozenset[str] | set[str] = frozenset()
    ) -> list[Recommendation] | None:
        """Convenience for scripts (``recforge status``): the user's top-k as objects, None if unknown."""
        position = self.user_position(user_id)
        if position is None:
            return None
        rows, scores, codes = self.user_slots(position, k, None, self.excluded_rows(excluded))
        return [
            Recommendation(self.item_ids[row], float(score), self.reason_names[code])
            for row, score, code in zip(rows.tolist(), scores.tolist(), codes.tolist(), strict=True)
        ]

    def user_slots(
        self, position: int, k: int, blocked: np.ndarray | None, excluded: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(item rows, scores, reason codes) of the user's top-k without blocked or excluded items.

        Removed items are replaced from further down the stored top N.
        """
        start, end = int(self.offsets[position]), int(self.offsets[position + 1])
        if blocked is None and excluded is None:  # the common case: a plain slice
            end = min(end, start + k)
            return self.rec_items[start:end], self.rec_scores[start:end], self.rec_reasons[start:end]
        keep = _allowed(self.rec_items[start:end], blocked, excluded, k)
        return self.rec_items[start:end][keep], self.rec_scores[start:end][keep], self.rec_reasons[start:end][keep]

    # --- answers: JSON bytes assembled from fragments built once per publication

    def user_slate(
        self, position: int | None, k: int, blocked: np.ndarray | None, excluded: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(item rows, scores, reason codes) of a recommendations answer; codes None for the fallback list."""
        if position is None:
            keep = _allowed(self.fallback_items, blocked, excluded, k)
            return self.fallback_items[keep], self.fallback_scores[keep], None
        return self.user_slots(position, k, blocked, excluded)

    def answer_with_reasons(
        self,
        user_id: str,
        request_id: bytes,
        rows: list[int],
        scores: list[float],
        reasons: list[str],
        fallback: bool = False,
    ) -> bytes:
        """The body of a recommendations answer ranked (serving/session.py) or explored (serving/exploration.py)
        at request time, one reason per item."""
        parts = [
            self._item_json[row] + b"%.6g" % score + b',"reason":' + orjson.dumps(reason) + b"}"
            for row, score, reason in zip(rows, scores, reasons, strict=True)
        ]
        head = self._fallback_head if fallback else self._user_head
        head = b'{"user_id":' + orjson.dumps(user_id) + b',"request_id":"' + request_id + b'"' + head
        return head + b"[" + b",".join(parts) + b"]}"

    def slate_reasons(self, codes: np.ndarray | None, count: int) -> list[str]:
        """The reason of each slot of a ``user_slate`` (``popular`` for the fallback list, which has no codes)."""
        if codes is None:
            return ["popular"] * count
        return [self.reason_names[code] for code in codes.tolist()]

    @property
    def memory_bytes(self) -> int:
        """What this publication holds in memory, about: the lists (with the C path's table), the fallback
        list and the item index's vectors (an HNSW graph adds its links, not counted)."""
        vectors = int(self.index.ntotal) * int(self.index.d) * 4
        fallback = self.fallback_items.nbytes + self.fallback_scores.nbytes
        return self.list_bytes + fallback + vectors

    def user_body(self, user_id: str, request_id: bytes, slate: tuple) -> bytes:
        """The body of a recommendations answer for a slate of ``user_slate`` (fallback when it has no codes)."""
        rows, scores, codes = slate
        if codes is None:
            head, items = self._fallback_head, self._items_json(rows, scores, reason="popular")
        else:
            head, items = self._user_head, self._items_json(rows, scores, codes)
        return b'{"user_id":' + orjson.dumps(user_id) + b',"request_id":"' + request_id + b'"' + head + items + b"}"

    def user_answer(
        self,
        user_id: str,
        position: int | None,
        k: int,
        blocked: np.ndarray | None,
        excluded: np.ndarray | None,
        request_id: bytes,
    ) -> bytes:
        """The body of a recommendations answer: the user's list, or the fallback list when position is None."""
        return self.user_body(user_id, request_id, self.user_slate(position, k, blocked, excluded))

    def similar_slate(
        self, item_row: int, k: int, blocked: np.ndarray | None, excluded: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(item rows, scores) nearest to the item by the item index; the item, blocked and excluded items skipped."""
        extra = (0 if blocked is None else int(blocked.sum())) + (0 if excluded is None else len(excluded))
        depth = min(k + 1 + extra, len(self.item_ids))
        vector = self.index.reconstruct(item_row).reshape(1, -1)
        scores, rows = self.index.search(vector, depth)
        rows, scores = rows[0], scores[0]
        valid = (rows >= 0) & (rows != item_row)
        rows, scores = rows[valid], scores[valid]
        keep = _allowed(rows, blocked, excluded, k)
        return rows[keep], scores[keep]

    def similar_body(self, item_id: str, item_row: int, request_id: bytes, slate: tuple) -> bytes:
        items = self._items_json(*slate, reason=f"similar_to:{self.item_ids[item_row]}")
        head = b'{"item_id":' + orjson.dumps(item_id) + b',"request_id":"' + request_id + b'"' + self._similar_head
        return head + items + b"}"

    def similar_answer(
        self,
        item_id: str,
        item_row: int,
        k: int,
        blocked: np.ndarray | None,
        excluded: np.ndarray | None,
        request_id: bytes,
    ) -> bytes:
        """The body of a similar-items answer."""
        return self.similar_body(item_id, item_row, request_id, self.similar_slate(item_row, k, blocked, excluded))

    def _prepare_answers(self) -> None:
        """JSON fragments per item row and per reason, so an answer costs one join, not a dict per item.

        An answer's items are ``{"item_id":<id>,"score":<score>,"reason":<reason>}``; ids and
        reasons are escaped once here by orjson, scores at request time (6 significant digits).
        """
        self._item_json = [b'{"item_id":' + orjson.dumps(item) + b',"score":' for item in self.item_ids]
        self._reason_json = [b',"reason":' + orjson.dumps(name) + b"}" for name in self.reason_names]
        version = orjson.dumps(self.version)
        # What follows the requested id in each kind of answer, up to the items array. Recommendations
        # carry the experiment and variant that routed the user, null here; with_arms fills them in.
        self._user_head = b',"version":' + version + NO_ARMS + b',"fallback":false,"items":'
        self._fallback_head = b',"version":' + version + NO_ARMS + b',"fallback":true,"items":'
        self._similar_head = b',"version":' + version + b',"items":'

    def _fast_answer(self):
        """`fast_answer(user_id, query_string, request_id) -> (body, position, count) | None`: the common
        answer in one C call with the user's position and the slate's length (for the impression log), or None.

        None (the function) when the C extension is not built or the ids are longer than the API
        can ask for; None (the result) for every request it does not cover, which then takes
        ``user_answer`` (see serving/_fastpath.c).
        """
        self.fast_path_bytes = 0
        if _fastpath is None or self.user_ids.itemsize // 4 > MAX_ID_LENGTH:
            return None
        item_json, item_offsets = _concatenated(self._item_json)
        reason_json, reason_offsets = _concatenated(self._reason_json)
        tables = _fastpath.prepare(
            self.user_ids,
            self.user_ids.itemsize // 4,
            self.offsets,
            self.rec_items,
            self.rec_scores,
            self.rec_reasons,
            self.rec_reasons.itemsize,
            item_json,
            item_offsets,
            reason_json,
            reason_offsets,
            self._user_head,
            self.top_n,
        )
        self.fast_path_bytes = _fastpath.table_bytes(tables)
        return functools.partial(_fastpath.user_answer, tables)

    def _items_json(
        self, rows: np.ndarray, scores: np.ndarray, codes: np.ndarray | None = None, reason: str = ""
    ) -> bytes:
        """A JSON array of items; every slot gets its reason code's text, or `reason` when codes is None."""
        if not len(rows):
            return b"[]"
        score_json = [b"%.6g" % score for score in scores.tolist()]  # 6 significant digits, as the C path
        rows = rows.tolist()
        if codes is None:
            tails = [b',"reason":' + orjson.dumps(reason) + b"}"] * len(rows)
        else:
            tails = [self._reason_json[code] for code in codes.tolist()]
        fragments = self._item_json
        parts = [fragments[row] + score + tail for row, score, tail in zip(rows, score_json, tails, strict=True)]
        return b"[" + b",".join(parts) + b"]"


def _concatenated(fragments: list[bytes]) -> tuple[bytes, np.ndarray]:
    """Fragments back to back, and int64 offsets: fragment i is blob[offsets[i]:offsets[i + 1]]."""
    offsets = np.zeros(len(fragments) + 1, dtype=np.int64)
    np.cumsum([len(fragment) for fragment in fragments], out=offsets[1:])
    return b"".join(fragments), offsets


def _allowed(rows: np.ndarray, blocked: np.ndarray | None, excluded: np.ndarray | None, k: int) -> np.ndarray:
    """Positions of the first k rows that are neither blocked nor excluded.

    A plain loop that stops at the k-th: an answer needs about k of up to N rows, and numpy's
    per-call overhead (isin, cumsum) cost more than the whole loop for lists this short.
    """
    skipped = set(excluded.tolist()) if excluded is not None else set()
    picked: list[int] = []
    for position, row in enumerate(rows.tolist()):
        if row in skipped or (blocked is not None and blocked[row]):
            continue
        picked.append(position)
        if len(picked) == k:
            break
    return np.array(picked, dtype=np.int64)


def _decode(column: pa.ChunkedArray, lookup, dtype) -> np.ndarray:
    """Map a dictionary-encoded column through `lookup(dictionary) -> values`, chunk by chunk.

    Consecutive chunks of one row group share a dictionary; it is looked up once and reused.
    """
    out = np.empty(len(column), dtype=dtype)
    start, last_dictionary, mapping = 0, None, None
    for chunk in column.chunks:
        if not pa.types.is_dictionary(chunk.type):
            chunk = chunk.dictionary_encode()
        if last_dictionary is None or not chunk.dictionary.equals(last_dictionary):
            last_dictionary, mapping = chunk.dictionary, lookup(chunk.dictionary)
        np.take(mapping, chunk.indices.to_numpy(), out=out[start : start + len(chunk)])
        start += len(chunk)
    return out


def _user_runs(users: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(first row of each run of equal user ids, the id of each run) for a column grouped by user.

    Works on each chunk's dictionary indices (a run ends where the index changes), so no
    per-row string is ever built; a run that crosses a chunk boundary is joined.
    """
    starts, ids, offset, last = [], [], 0, None
    for chunk in users.chunks:
        if not pa.types.is_dictionary(chunk.type):
            chunk = chunk.dictionary_encode()
        indices = chunk.indices.to_numpy()
        if not len(indices):
            continue
        local = np.append(0, np.flatnonzero(np.diff(indices)) + 1)
        names = chunk.dictionary.take(pa.array(indices[local])).to_numpy(zero_copy_only=False)
        if last is not None and names[0] == last:  # the previous chunk's last user goes on here
            local, names = local[1:], names[1:]
        if len(names):
            starts.append(local + offset)
            ids.append(names)
            last = names[-1]
        offset += len(indices)
    if not starts:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=object)
    return np.concatenate(starts).astype(np.int64), np.concatenate(ids)


def _sorted_by_user_and_rank(user_ids: np.ndarray, starts: np.ndarray, ranks: np.ndarray) -> bool:
    """Each user in one run, runs in increasing id order, ranks increasing within a run."""
    ids = np.asarray(user_ids, dtype=np.str_)
    if len(ids) > 1 and not np.all(ids[1:] > ids[:-1]):
        return False
    increasing = np.ones(len(ranks), dtype=bool)
    increasing[1:] = ranks[1:] > ranks[:-1]
    increasing[starts] = True
    return bool(increasing.all())
