"""A publication loaded into compact arrays, verified before anyone can read it.

Per-user lists are held CSR-style: a sorted array of user ids (bytes), an offsets array, and
flat item-row / score / reason-code arrays, about 9-10 bytes per stored item. Looking a user up
is a binary search; there is no Python object per user or per list, so 1M users x 100 items
fit in about 1 GB and load in seconds (the parquet columns are decoded by Arrow, never row by
row in Python).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

INDEX_FILE = "item_index.faiss"
REQUIRED_FILES = ("user_recs.parquet", "fallback.parquet", "items.parquet", INDEX_FILE)


class PublicationError(RuntimeError):
    """The publication on disk is incomplete or does not match its manifest."""


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
        try:
            self.manifest = json.loads((directory / "manifest.json").read_text())
        except (OSError, ValueError) as error:
            raise PublicationError(f"{directory}: manifest.json is unreadable: {error}") from None
        self.version: str = self.manifest["version"]
        self.top_n: int = int(self.manifest["top_n"])
        self._verify_checksums()

        items = pq.read_table(directory / "items.parquet", columns=["item_id", "index_row"]).sort_by("index_row")
        self._items_arrow = items.column("item_id").combine_chunks().cast(pa.string())
        self.item_ids: list[str] = self._items_arrow.to_pylist()  # row -> id, for building answers
        self.item_rows: dict[str, int] = {item: row for row, item in enumerate(self.item_ids)}
        if len(self.item_rows) != len(self.item_ids):
            raise PublicationError(f"{directory}: items.parquet repeats an item id")

        self._load_user_lists(directory / "user_recs.parquet")

        fallback = pq.read_table(directory / "fallback.parquet", columns=["rank", "item_id", "score"]).sort_by("rank")
        self.fallback_items = self._rows_of(fallback.column("item_id"))
        self.fallback_scores = fallback.column("score").to_numpy().astype(np.float32)

        import faiss

        self.index = faiss.read_index(str(directory / INDEX_FILE))
        if self.index.ntotal != len(self.item_ids):
            raise PublicationError(
                f"{directory}: item index holds {self.index.ntotal} vectors for {len(self.item_ids)} items"
            )
        self.index_spec: dict = self.manifest.get("item_index", {"type": "flat"})
        if self.index_spec.get("type") == "hnsw":
            faiss.downcast_index(self.index).hnsw.efSearch = int(self.index_spec["ef_search"])
        self.load_seconds = time.perf_counter() - started
        self._blocked_for: frozenset[str] | None = None
        self._blocked_mask = np.zeros(len(self.item_ids), dtype=bool)

    # --- loading

    def _verify_checksums(self) -> None:
        files = self.manifest.get("files", {})
        missing = [name for name in REQUIRED_FILES if name not in files]
        if missing:
            raise PublicationError(f"{self.directory}: the manifest lists no {', '.join(missing)}")
        for name, facts in files.items():
            path = self.directory / name
            if path.resolve().parent != self.directory.resolve():
                raise PublicationError(f"{self.directory}: manifest names a file outside the publication: {name!r}")
            if not path.exists():
                raise PublicationError(f"{self.directory}: {name} listed in the manifest is missing")
            if _sha256(path) != facts["sha256"]:
                raise PublicationError(f"{self.directory}: checksum of {name} does not match the manifest")

    def _rows_of(self, item_ids: pa.ChunkedArray) -> np.ndarray:
        """Item rows for a column of item ids, through each chunk's dictionary (one lookup per distinct id)."""
        out = np.empty(len(item_ids), dtype=np.int32)
        start = 0
        for chunk in item_ids.chunks:
            if not pa.types.is_dictionary(chunk.type):
                chunk = chunk.dictionary_encode()
            mapping = pc.index_in(chunk.dictionary.cast(pa.string()), value_set=self._items_arrow)
            if mapping.null_count:
                unknown = chunk.dictionary.filter(pc.is_null(mapping))[0]
                raise PublicationError(f"{self.directory}: lists name item {unknown} that items.parquet does not have")
            out[start : start + len(chunk)] = mapping.to_numpy(zero_copy_only=False)[chunk.indices.to_numpy()]
            start += len(chunk)
        return out

    def _reason_codes(self, reasons: pa.ChunkedArray) -> tuple[list[str], np.ndarray]:
        names: dict[str, int] = {}
        chunks = []
        for chunk in reasons.chunks:
            if not pa.types.is_dictionary(chunk.type):
                chunk = chunk.dictionary_encode()
            local = np.array([names.setdefault(name, len(names)) for name in chunk.dictionary.to_pylist()])
            chunks.append(local[chunk.indices.to_numpy()] if len(local) else np.empty(0, dtype=np.int64))
        codes = np.concatenate(chunks) if chunks else np.empty(0, dtype=np.int64)
        return list(names), codes.astype(np.min_scalar_type(max(len(names) - 1, 0)))

    def _load_user_lists(self, path: Path) -> None:
        recs = pq.read_table(
            path, columns=["user_id", "rank", "item_id", "score", "reason"], read_dictionary=["item_id", "reason"]
        )
        users = recs.column("user_id")
        ranks = recs.column("rank").to_numpy()
        if len(users) and not self._sorted_by_user_and_rank(users, ranks):
            # Publications are written sorted; an unsorted one still loads correctly, only slower.
            log.warning("%s is not sorted by user_id, rank: sorting it", path)
            recs = recs.sort_by([("user_id", "ascending"), ("rank", "ascending")])
            users, ranks = recs.column("user_id"), recs.column("rank").to_numpy()
        starts = _run_starts(users)
        self.user_ids = np.asarray(users.take(pa.array(starts)).to_numpy(zero_copy_only=False), dtype=np.str_)
        self.offsets = np.append(starts, len(users)).astype(np.int64)
        self.rec_items = self._rows_of(recs.column("item_id"))
        self.rec_scores = recs.column("score").to_numpy().astype(np.float32, copy=False)
        self.reason_names, self.rec_reasons = self._reason_codes(recs.column("reason"))
        if np.diff(self.offsets).max(initial=0) > self.top_n:
            raise PublicationError(f"{self.directory}: a user has more than top_n={self.top_n} items")

    @staticmethod
    def _sorted_by_user_and_rank(users: pa.ChunkedArray, ranks: np.ndarray) -> bool:
        if len(users) < 2:
            return True
        if pc.any(pc.less(users[1:], users[:-1])).as_py():
            return False
        new_user = np.append(True, pc.not_equal(users[1:], users[:-1]).to_numpy(zero_copy_only=False))
        increasing = np.append(True, np.diff(ranks.astype(np.int32)) > 0)
        return bool(np.all(new_user | increasing))

    # --- facts

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def list_bytes(self) -> int:
        """Bytes held for the per-user lists (ids, offsets, items, scores, reasons)."""
        arrays = (self.user_ids, self.offsets, self.rec_items, self.rec_scores, self.rec_reasons)
        return int(sum(a.nbytes for a in arrays))

    @property
    def bytes_per_user(self) -> float:
        return self.list_bytes / max(self.n_users, 1)

    # --- lookups (all return (item rows, scores, reasons) for the answer builder)

    def blocked_mask(self, blocked: frozenset[str]) -> np.ndarray:
        """Boolean mask over item rows of the server's blocklist, rebuilt only when the blocklist changes."""
        if blocked is not self._blocked_for:
            mask = np.zeros(len(self.item_ids), dtype=bool)
            mask[[self.item_rows[i] for i in blocked if i in self.item_rows]] = True
            self._blocked_mask, self._blocked_for = mask, blocked
        return self._blocked_mask

    def excluded_rows(self, item_ids) -> np.ndarray:
        """Rows of the given ids that this publication knows (others cannot be in any answer anyway)."""
        return np.fromiter((self.item_rows[i] for i in item_ids if i in self.item_rows), dtype=np.int32)

    def user_position(self, user_id: str) -> int | None:
        pos = int(np.searchsorted(self.user_ids, user_id))
        return pos if pos < len(self.user_ids) and self.user_ids[pos] == user_id else None

    def for_user(
        self, user_id: str, k: int, excluded: frozenset[str] | set[str] = frozenset()
    ) -> list[Recommendation] | None:
        """Convenience for scripts (``recforge status``): the user's top-k as objects, None if unknown."""
        position = self.user_position(user_id)
        if position is None:
            return None
        no_block = np.zeros(len(self.item_ids), dtype=bool)
        answer = self.user_list(position, k, no_block, self.excluded_rows(excluded))
        return [Recommendation(**item) for item in answer]

    def user_list(self, position: int, k: int, blocked: np.ndarray, excluded: np.ndarray) -> list[dict]:
        """The user's top-k without blocked or excluded items, refilled from further down the stored list."""
        start, end = self.offsets[position], self.offsets[position + 1]
        rows = self.rec_items[start:end]
        keep = _allowed(rows, blocked, excluded, k)
        names = self.reason_names
        reasons = self.rec_reasons[start:end][keep]
        return self._answer(rows[keep], self.rec_scores[start:end][keep], [names[r] for r in reasons.tolist()])

    def fallback(self, k: int, blocked: np.ndarray, excluded: np.ndarray) -> list[dict]:
        keep = _allowed(self.fallback_items, blocked, excluded, k)
        return self._answer(self.fallback_items[keep], self.fallback_scores[keep], ["popular"] * int(keep.sum()))

    def similar(self, item_row: int, k: int, blocked: np.ndarray, excluded: np.ndarray) -> list[dict]:
        """Nearest items by the item index; the item itself, blocked and excluded items are skipped."""
        depth = min(k + 1 + int(blocked.sum()) + len(excluded), len(self.item_ids))
        vector = self.index.reconstruct(item_row).reshape(1, -1)
        scores, rows = self.index.search(vector, depth)
        rows, scores = rows[0], scores[0]
        valid = (rows >= 0) & (rows != item_row)
        rows, scores = rows[valid], scores[valid]
        keep = _allowed(rows, blocked, excluded, k)
        reason = f"similar_to:{self.item_ids[item_row]}"
        return self._answer(rows[keep], scores[keep], [reason] * int(keep.sum()))

    def _answer(self, rows: np.ndarray, scores: np.ndarray, reasons: list[str]) -> list[dict]:
        ids = self.item_ids
        rounded = scores.astype(np.float64).round(6).tolist()  # float32 noise is not information
        return [
            {"item_id": ids[row], "score": score, "reason": reason}
            for row, score, reason in zip(rows.tolist(), rounded, reasons, strict=True)
        ]


def _allowed(rows: np.ndarray, blocked: np.ndarray, excluded: np.ndarray, k: int) -> np.ndarray:
    """Mask of the first k rows that are neither blocked nor excluded."""
    ok = ~blocked[rows]
    if len(excluded):
        ok &= ~np.isin(rows, excluded)
    ok &= np.cumsum(ok) <= k
    return ok


def _run_starts(users: pa.ChunkedArray) -> np.ndarray:
    """First row of each user's run in a column sorted by user."""
    if len(users) == 0:
        return np.empty(0, dtype=np.int64)
    changes = pc.not_equal(users[1:], users[:-1]).to_numpy(zero_copy_only=False)
    return np.append(0, np.flatnonzero(changes) + 1).astype(np.int64)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()
