"""A publication loaded into compact arrays, verified before anyone can read it.

Per-user lists are held CSR-style: a sorted array of user ids, an offsets array, and
flat item-index / score / reason-code arrays. Looking a user up is a binary search;
there is no Python object per user or per list.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

log = logging.getLogger(__name__)


class PublicationError(RuntimeError):
    """The publication on disk is incomplete or does not match its manifest."""


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    score: float
    reason: str


class Publication:
    def __init__(self, directory: Path):
        self.directory = directory
        self.manifest = json.loads((directory / "manifest.json").read_text())
        self.version: str = self.manifest["version"]
        self.top_n: int = int(self.manifest["top_n"])
        self._verify_checksums()

        items = pq.read_table(directory / "items.parquet", columns=["item_id", "index_row"])
        items = items.sort_by("index_row")
        self.item_ids = np.asarray(items.column("item_id").to_pylist(), dtype=str)
        self._item_order = np.argsort(self.item_ids)

        recs = pq.read_table(directory / "user_recs.parquet").sort_by([("user_id", "ascending"), ("rank", "ascending")])
        users = np.asarray(recs.column("user_id").to_pylist(), dtype=str)
        self.user_ids, starts = np.unique(users, return_index=True)
        self.offsets = np.append(starts, len(users)).astype(np.int64)
        self.rec_items = self._item_rows(np.asarray(recs.column("item_id").to_pylist(), dtype=str))
        self.rec_scores = recs.column("score").to_numpy().astype(np.float32)
        reasons = pc.dictionary_encode(recs.column("reason")).combine_chunks()
        self.reason_names = reasons.dictionary.to_pylist()
        self.rec_reasons = reasons.indices.to_numpy().astype(np.uint8)

        fallback = pq.read_table(directory / "fallback.parquet").sort_by("rank")
        self.fallback_items = self._item_rows(np.asarray(fallback.column("item_id").to_pylist(), dtype=str))
        self.fallback_scores = fallback.column("score").to_numpy().astype(np.float32)

        import faiss

        self.index = faiss.read_index(str(directory / "item_index.faiss"))
        if self.index.ntotal != len(self.item_ids):
            raise PublicationError(
                f"{directory}: item index holds {self.index.ntotal} vectors for {len(self.item_ids)} items"
            )

    def _verify_checksums(self) -> None:
        for name, facts in self.manifest["files"].items():
            path = self.directory / name
            if not path.exists():
                raise PublicationError(f"{self.directory}: {name} listed in the manifest is missing")
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest != facts["sha256"]:
                raise PublicationError(f"{self.directory}: checksum of {name} does not match the manifest")

    def _item_rows(self, item_ids: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.item_ids, item_ids, sorter=self._item_order)
        pos = np.minimum(pos, len(self.item_ids) - 1)
        rows = self._item_order[pos]
        if len(item_ids) and not np.array_equal(self.item_ids[rows], item_ids):
            raise PublicationError(f"{self.directory}: lists name items that items.parquet does not have")
        return rows.astype(np.int32)

    def item_row(self, item_id: str) -> int | None:
        pos = int(np.searchsorted(self.item_ids, item_id, sorter=self._item_order))
        if pos < len(self.item_ids) and self.item_ids[self._item_order[pos]] == item_id:
            return int(self._item_order[pos])
        return None

    def for_user(self, user_id: str, k: int, excluded: frozenset[str] | set[str] = frozenset()):
        """The user's top-k without `excluded` items (refilled from deeper), or None for an unknown user."""
        recs = self._user_top(user_id, min(k + len(excluded), self.top_n))
        return None if recs is None else _without(recs, excluded, k)

    def _user_top(self, user_id: str, k: int) -> list[Recommendation] | None:
        pos = int(np.searchsorted(self.user_ids, user_id))
        if pos >= len(self.user_ids) or self.user_ids[pos] != user_id:
            return None
        start, end = self.offsets[pos], min(self.offsets[pos + 1], self.offsets[pos] + k)
        return [
            Recommendation(str(self.item_ids[i]), float(s), self.reason_names[r])
            for i, s, r in zip(
                self.rec_items[start:end], self.rec_scores[start:end], self.rec_reasons[start:end], strict=False
            )
        ]

    def fallback(self, k: int, excluded: frozenset[str] | set[str] = frozenset()) -> list[Recommendation]:
        depth = min(k + len(excluded), self.top_n)
        return _without(self._fallback_top(depth), excluded, k)

    def _fallback_top(self, k: int) -> list[Recommendation]:
        return [
            Recommendation(str(self.item_ids[i]), float(s), "popular")
            for i, s in zip(self.fallback_items[:k], self.fallback_scores[:k], strict=False)
        ]

    def similar(self, item_row: int, k: int, excluded: frozenset[str] | set[str] = frozenset()) -> list[Recommendation]:
        depth = min(k + len(excluded), len(self.item_ids) - 1)
        return _without(self._similar_top(item_row, depth), excluded, k)

    def _similar_top(self, item_row: int, k: int) -> list[Recommendation]:
        vector = self.index.reconstruct(item_row).reshape(1, -1)
        scores, rows = self.index.search(vector, k + 1)
        out = [
            Recommendation(str(self.item_ids[r]), float(s), f"similar_to:{self.item_ids[item_row]}")
            for r, s in zip(rows[0], scores[0], strict=False)
            if r >= 0 and r != item_row
        ]
        return out[:k]


def _without(recs: list[Recommendation], excluded, k: int) -> list[Recommendation]:
    """Drop excluded items; callers fetched k + len(excluded) so k remain where the list allows."""
    return [r for r in recs if r.item_id not in excluded][:k]


class PublicationStore:
    """Holds the live publication and swaps in a new one only when it has loaded and verified.

    A background thread watches ``CURRENT``; readers always see one whole publication.
    """

    def __init__(self, published_dir: Path, reload_interval_seconds: float = 2.0):
        self.published_dir = published_dir
        self.reload_interval_seconds = reload_interval_seconds
        self.current: Publication | None = None
        self.last_error: str | None = None
        self.blocked: frozenset[str] = frozenset()
        self._blocklist_mtime: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def live_version_on_disk(self) -> str | None:
        path = self.published_dir / "CURRENT"
        return path.read_text().strip() if path.exists() else None

    def refresh(self) -> bool:
        """Load the version CURRENT names if it is new. Returns True if a new version went live."""
        version = self.live_version_on_disk()
        if version is None or (self.current is not None and self.current.version == version):
            return False
        try:
            publication = Publication(self.published_dir / version)
        except Exception as error:  # a broken publication must never take the service down
            self.last_error = f"refused publication {version}: {error}"
            log.error(self.last_error)
            return False
        self.current = publication
        self.last_error = None
        log.info("publication %s is live", version)
        return True

    @property
    def blocklist_path(self) -> Path:
        """Items blocked after publication, one id per line ('#' starts a comment)."""
        return self.published_dir / "blocklist.txt"

    def refresh_blocklist(self) -> bool:
        """Reload the blocklist if the file changed; it applies to every answer at once."""
        try:
            mtime = self.blocklist_path.stat().st_mtime
        except FileNotFoundError:
            changed = bool(self.blocked)
            self.blocked, self._blocklist_mtime = frozenset(), None
            return changed
        if mtime == self._blocklist_mtime:
            return False
        lines = self.blocklist_path.read_text().splitlines()
        self.blocked = frozenset(line.split("#")[0].strip() for line in lines) - {""}
        self._blocklist_mtime = mtime
        log.info("blocklist: %d item(s)", len(self.blocked))
        return True

    def start(self) -> None:
        self.refresh()
        self.refresh_blocklist()
        self._thread = threading.Thread(target=self._watch, name="publication-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        while not self._stop.wait(self.reload_interval_seconds):
            self.refresh()
            self.refresh_blocklist()
