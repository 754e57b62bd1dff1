"""The deny list contract: users forgotten since the live publication, answered with the fallback.

``recforge forget`` removes a user from every store and publishes a version without them, but the
server only swaps publications on its next look at ``CURRENT``. Until then, the user must not be
served their personal list: forget writes them to ``published/denylist.txt`` *first*, and the
server, which watches the file as it watches the blocklist, answers a denied user with the
fallback list at once.

The file never holds an id (forgetting must leave none on disk): each entry is
``sha256(salt + user_id)`` with a random salt kept in the file's header, and the version of the
publication that was live when the user was forgotten. An entry holds while the server's live
version sorts at or before that version (versions are named by their UTC creation time), so it
stops costing anything, and the fast path comes back, as soon as the clean publication is live.

    # recforge deny list: users forgotten since a publication; sha256(salt || user_id)
    salt <hex>
    <hex digest> <live version when forgotten, or '-' if nothing was published>

Writer (``pipelines/privacy/forget.py``) and reader (``serving/store.py``) both use this module.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

DENYLIST = "denylist.txt"
HEADER = "# recforge deny list: users forgotten since a publication; sha256(salt || user_id)"
NO_VERSION = "-"


def salted_hash(salt: str, user_id: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + user_id.encode()).hexdigest()


def read_denylist(path: Path) -> tuple[str | None, dict[str, str]]:
    """(salt, {digest: version}) of the file; (None, {}) when it does not exist."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return None, {}
    salt, entries = None, {}
    for line in lines:
        fields = line.split("#")[0].split()
        if len(fields) == 2 and fields[0] == "salt":
            salt = fields[1]
        elif len(fields) == 2:
            entries[fields[0]] = fields[1]
    return salt, entries


def active_digests(entries: dict[str, str], live_version: str | None) -> frozenset[str]:
    """The entries that still hold for a server serving `live_version`: those forgotten while it (or a
    later version) was live, i.e. whose recorded version sorts at or after it. An entry made when nothing
    was published holds only until something is (forget's own publication step runs under the publish
    lock, so no version made before the request can go live after it)."""
    if live_version is None:
        return frozenset(entries)
    return frozenset(d for d, version in entries.items() if version != NO_VERSION and live_version <= version)


def add_to_denylist(path: Path, user_ids: list[str], live_version: str | None) -> int:
    """Add the users (as salted hashes) with the live version; atomic (temp file, fsync, rename). New entries."""
    salt, entries = read_denylist(path)
    salt = salt or secrets.token_hex(16)
    added = 0
    for user_id in user_ids:
        digest = salted_hash(salt, user_id)
        version = live_version or NO_VERSION
        if entries.get(digest) != version:
            added += digest not in entries
            entries[digest] = max(entries.get(digest, version), version)
    body = "\n".join([HEADER, f"salt {salt}", *(f"{d} {v}" for d, v in sorted(entries.items()))]) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        handle.write(body)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return added


def is_denied(salt: str | None, active: frozenset[str], user_id: str) -> bool:
    return bool(active) and salt is not None and salted_hash(salt, user_id) in active
