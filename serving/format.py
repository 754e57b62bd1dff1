"""The publication contract: what a version directory holds and how it is proven complete.

The publisher (``pipelines/publication/publish.py``) writes it and serving reads it; both import this
module, so the file names, the manifest's file table, the checksum and the rules of
verification are spelled once. It imports nothing but the standard library: serving stays thin.

Layout of ``published/``::

    CURRENT                 the live version's name, replaced atomically
    blocklist.txt           item ids blocked after publication (optional, watched by serving)
    denylist.txt            users forgotten since a publication, salted hashes (serving/denylist.py)
    <version>/
        manifest.json       written last; lists every file with its sha256 and size
        user_recs.parquet   user_id, rank, item_id, score, reason, item_row (sorted by user_id, rank)
        fallback.parquet    rank, item_id, score, reason
        items.parquet       item attributes and index_row
        item_index.faiss    row i = the items.parquet row whose index_row is i
    .staging-<version>/     a publish in progress: never read
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

CURRENT = "CURRENT"
BLOCKLIST = "blocklist.txt"
MANIFEST = "manifest.json"
USER_RECS = "user_recs.parquet"
# The lists file's columns in order, with their Arrow types (item_row: the item's row in items.parquet).
USER_RECS_COLUMNS = (
    ("user_id", "string"),
    ("rank", "int16"),
    ("item_id", "string"),
    ("score", "float32"),
    ("reason", "string"),
    ("item_row", "int32"),
)
FALLBACK = "fallback.parquet"
ITEMS = "items.parquet"
INDEX_FILE = "item_index.faiss"
REQUIRED_FILES = (USER_RECS, FALLBACK, ITEMS, INDEX_FILE)
STAGING_PREFIX = ".staging-"  # a directory being written; its name can never be a version
MAX_TOP_N = 1000  # the deepest list a manifest's top_n may promise (settings.publish_top_n's bound)


class PublicationError(RuntimeError):
    """A publication on disk is incomplete, or does not match its manifest."""


def sha256(path: Path) -> str:
    """The checksum a manifest records for each file (hex digest, read in 4 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_facts(directory: Path) -> dict[str, dict]:
    """The manifest's file table: sha256 and size of every file of a version directory."""
    return {p.name: {"sha256": sha256(p), "bytes": p.stat().st_size} for p in sorted(directory.iterdir())}


def read_manifest(directory: Path) -> dict:
    try:
        return json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError) as error:
        raise PublicationError(f"{directory}: {MANIFEST} is unreadable: {error}") from None


def verify_version(directory: Path) -> dict:
    """The version's manifest, after checking that it lists the required files and every file matches it.

    A manifest that names a file outside its own directory is refused: a manifest is data, and
    must not make the reader hash (or later open) anything else on the machine.
    """
    manifest = read_manifest(directory)
    files = manifest.get("files", {})
    missing = [name for name in REQUIRED_FILES if name not in files]
    if missing:
        raise PublicationError(f"{directory}: the manifest lists no {', '.join(missing)}")
    for name, facts in files.items():
        path = directory / name
        if path.resolve().parent != directory.resolve():
            raise PublicationError(f"{directory}: manifest names a file outside the publication: {name!r}")
        if not path.exists():
            raise PublicationError(f"{directory}: {name} listed in the manifest is missing")
        actual = sha256(path)
        if actual != facts["sha256"]:
            raise PublicationError(
                f"{directory}: {name} is missing or does not match its checksum in the manifest "
                f"(checksum of {name} is {actual[:12]}..., the manifest says {facts['sha256'][:12]}...)"
            )
    return manifest


def current_version(root: Path) -> str | None:
    """The version ``CURRENT`` names, or None when nothing was ever published."""
    try:
        return (root / CURRENT).read_text().strip() or None
    except FileNotFoundError:
        return None


def version_directory(root: Path, version: str) -> Path:
    """The directory of a version ``CURRENT`` names; it must lie directly inside ``root``."""
    directory = (root / version).resolve()
    if directory.parent != root.resolve():
        raise PublicationError(f"{CURRENT} must name a directory inside {root}, not {version!r}")
    return directory


def is_complete_version(path: Path) -> bool:
    """A renamed-into-place version (sealed with its manifest), not a staging directory or a stray file."""
    return path.is_dir() and not path.name.startswith(".") and (path / MANIFEST).exists()


def complete_versions(root: Path) -> list[str]:
    """Complete versions (renamed into place, so sealed with a manifest), oldest first.

    Version names start with their UTC creation time, so name order is age order.
    """
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir() if is_complete_version(p))
