"""The live publication and the server's blocklist, both watched on disk by one background thread.

A new version named by ``CURRENT`` is loaded and verified off the request path and swapped in
with one reference assignment, so a request sees either the old publication or the new one,
whole. A version that fails to load is refused and logged; the old one keeps serving.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from serving.format import BLOCKLIST, current_version, version_directory
from serving.publication import Publication

log = logging.getLogger(__name__)


class PublicationStore:
    def __init__(self, published_dir: Path, reload_interval_seconds: float = 2.0):
        self.published_dir = published_dir
        self.reload_interval_seconds = reload_interval_seconds
        self.current: Publication | None = None
        self.last_error: str | None = None
        self.refused: set[str] = set()
        self.blocked: frozenset[str] = frozenset()
        self._blocklist_mtime: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def live_version_on_disk(self) -> str | None:
        return current_version(self.published_dir)

    def refresh(self) -> bool:
        """Load the version CURRENT names if it is new. Returns True if a new version went live."""
        version = self.live_version_on_disk()
        if version is None or (self.current is not None and self.current.version == version):
            return False
        if version in self.refused:
            return False  # refused once: do not re-read gigabytes every interval
        try:
            publication = Publication(version_directory(self.published_dir, version))
            if publication.version != version:
                raise ValueError(f"its manifest says version {publication.version!r}")
        except Exception as error:  # a broken publication must never take the service down
            self.refused.add(version)
            self.last_error = f"refused publication {version}: {error}"
            log.error(self.last_error)
            return False
        self.current = publication
        self.last_error = None
        log.info(
            "publication %s is live: %d users, %.0f bytes/user, loaded in %.1fs",
            version, publication.n_users, publication.bytes_per_user, publication.load_seconds,
        )  # fmt: skip
        return True

    @property
    def blocklist_path(self) -> Path:
        """Items blocked after publication, one id per line ('#' starts a comment)."""
        return self.published_dir / BLOCKLIST

    def refresh_blocklist(self) -> bool:
        """Reload the blocklist if the file changed; it applies to every answer at once."""
        try:
            mtime = self.blocklist_path.stat().st_mtime_ns
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
        """Watch in the background; the first load happens there too, so the server answers /healthz at once."""
        self._thread = threading.Thread(target=self._watch, name="publication-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _watch(self) -> None:
        while True:
            try:
                self.refresh_blocklist()
                self.refresh()
            except Exception:  # the watcher must outlive any one bad read
                log.exception("publication watcher")
            if self._stop.wait(self.reload_interval_seconds):
                return
