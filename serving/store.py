"""The live publication, the server's blocklist and deny list, all watched on disk by one background thread.

A new version named by ``CURRENT`` is loaded and verified off the request path and swapped in
with one reference assignment, so a request sees either the old publication or the new one,
whole. A version that fails to load is refused and logged; the old one keeps serving. When nothing
is live yet (a server started while ``CURRENT`` names a broken version), the newest complete
version older than the refused one that loads and verifies is served instead, and said so, while
``CURRENT`` is still watched: a good new version goes live as usual.

Errors are reported with paths relative to the published directory: ``/healthz`` is public and
must not tell a client where the server's files are.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from serving.denylist import DENYLIST, active_digests, is_denied, read_denylist
from serving.format import BLOCKLIST, complete_versions, current_version, version_directory
from serving.publication import Publication

log = logging.getLogger(__name__)


class PublicationStore:
    def __init__(self, published_dir: Path, reload_interval_seconds: float = 2.0):
        self.published_dir = published_dir
        self.reload_interval_seconds = reload_interval_seconds
        self.current: Publication | None = None
        self.last_error: str | None = None
        self.refused: set[str] = set()
        self.current_refused: str | None = None  # the version CURRENT names, when it was refused
        self.blocked: frozenset[str] = frozenset()
        self._blocklist_mtime: float | None = None
        # Users forgotten since the live publication (serving/denylist.py): salted hashes, never ids.
        self.deny_salt: str | None = None
        self.deny_entries: dict[str, str] = {}
        self.denied: frozenset[str] = frozenset()  # the entries that hold for the live version
        self._denylist_mtime: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Experiments (serving/variants.py): refreshed on this watcher after CURRENT, so variants on CURRENT's
        # version share its arrays; None when the app runs without the router (scripts, some tests).
        self.router = None

    def live_version_on_disk(self) -> str | None:
        return current_version(self.published_dir)

    @property
    def serving_fallback_version(self) -> bool:
        """True when the live version is not the one CURRENT names, because that one was refused."""
        return self.current is not None and self.current_refused is not None

    def refresh(self) -> bool:
        """Load the version CURRENT names if it is new. Returns True if a new version went live."""
        version = self.live_version_on_disk()
        if version is None or (self.current is not None and self.current.version == version):
            return False
        if version in self.refused:
            return False  # refused once: do not re-read gigabytes every interval
        try:
            publication = self.load_version(version)
        except Exception as error:  # a broken publication must never take the service down
            self.refused.add(version)
            self.current_refused = version
            self.last_error = f"refused publication {version}: {self.relative(str(error))}"
            log.error(self.last_error)
            if self.current is None:
                return self._fall_back(version)
            return False
        self._go_live(publication)
        self.current_refused = None
        self.last_error = None
        return True

    def load_version(self, version: str) -> Publication:
        """A complete version loaded and verified (as CURRENT's is); raises when it cannot be served."""
        publication = Publication(version_directory(self.published_dir, version))
        if publication.version != version:
            raise ValueError(f"its manifest says version {publication.version!r}")
        return publication

    def _fall_back(self, refused: str) -> bool:
        """Nothing is live and CURRENT's version was refused: go live on the newest older version that verifies."""
        for version in reversed([v for v in complete_versions(self.published_dir) if v < refused]):
            if version in self.refused:
                continue
            try:
                publication = self.load_version(version)
            except Exception as error:
                self.refused.add(version)
                log.error("fallback candidate %s refused too: %s", version, self.relative(str(error)))
                continue
            self._go_live(publication)
            log.warning("CURRENT names the refused %s: serving the older complete version %s", refused, version)
            return True
        log.error("CURRENT names the refused %s and no older complete version verifies: nothing to serve", refused)
        return False

    def _go_live(self, publication: Publication) -> None:
        self.current = publication
        self.denied = active_digests(self.deny_entries, publication.version)
        log.info(
            "publication %s is live: %d users, %.0f bytes/user, loaded in %.1fs",
            publication.version, publication.n_users, publication.bytes_per_user, publication.load_seconds,
        )  # fmt: skip

    def relative(self, message: str) -> str:
        """The message with the published directory's absolute path taken out (paths inside it become relative)."""
        roots = {str(self.published_dir), str(self.published_dir.resolve())}
        for root in sorted(roots, key=len, reverse=True):
            message = message.replace(root + "/", "").replace(root, "the published directory")
        return message

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

    @property
    def denylist_path(self) -> Path:
        return self.published_dir / DENYLIST

    def refresh_denylist(self) -> bool:
        """Reload the deny list if the file changed: a forgotten user gets the fallback from the next request on."""
        try:
            mtime = self.denylist_path.stat().st_mtime_ns
        except FileNotFoundError:
            changed = bool(self.deny_entries)
            self.deny_salt, self.deny_entries, self.denied, self._denylist_mtime = None, {}, frozenset(), None
            return changed
        if mtime == self._denylist_mtime:
            return False
        self.deny_salt, self.deny_entries = read_denylist(self.denylist_path)
        self.denied = active_digests(self.deny_entries, self.current.version if self.current else None)
        self._denylist_mtime = mtime
        log.info("deny list: %d forgotten user(s), %d held until their clean publication", len(self.deny_entries),
                 len(self.denied))  # fmt: skip
        return True

    def denies(self, user_id: str) -> bool:
        """Whether `user_id` was forgotten after the live publication was made (so it still holds their list)."""
        return is_denied(self.deny_salt, self.denied, user_id)

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
                self.refresh_denylist()
                self.refresh()
                if self.router is not None:
                    self.router.refresh(self)
            except Exception:  # the watcher must outlive any one bad read
                log.exception("publication watcher")
            if self._stop.wait(self.reload_interval_seconds):
                return
