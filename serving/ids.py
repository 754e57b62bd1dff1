"""The id contract: what a user or item id may be, defined once for ingest, the publisher and the API.

An id is an opaque string of 1 to ``MAX_ID_LENGTH`` characters from ``ID_CHARACTERS``
(ASCII letters, digits, ``_ . : -``). Why these rules:
- The API takes ids in URL paths: a safe alphabet means nothing in a request can name a path,
  and every published id can be requested (an id outside the pattern could be published but
  never asked for).
- The publication stores ids as fixed-width strings and serving's C fast path keys on them
  (``serving/_fastpath.c``'s ``MAX_ID_LENGTH`` is this number): one long id would size every
  row by it (a 100,000-character id made the publisher ask for 53.8 GiB) or switch the fast
  path off for everyone.

Trimming rule: none. Ids are never trimmed or rewritten, because ``" u1"`` and ``"u1"`` quietly
becoming one user is worse than refusing the row; whitespace is outside the alphabet, so such
a row is quarantined (``id_bad_characters``). An id that is empty or only spaces counts as
missing (``missing_user_id`` / ``missing_item_id``).

Ingest applies the same rules in SQL (``pipelines/ingest/sql/classify_events.sql`` gets
``MAX_ID_LENGTH`` and ``ID_CHARACTERS_REGEX`` as parameters); the publisher refuses an id that
breaks them (``invalid_ids``); the API's ``ID_PATTERN`` is built from them. This module imports
nothing but ``re`` so every side can import it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = [
    "ID_CHARACTERS",
    "ID_CHARACTERS_REGEX",
    "ID_PATTERN",
    "ID_VIOLATIONS",
    "MAX_ID_LENGTH",
    "id_violation",
    "invalid_ids",
]

MAX_ID_LENGTH = 128
ID_CHARACTERS = "A-Za-z0-9_.:-"  # a regex character-class body; '-' last so it is literal
ID_CHARACTERS_REGEX = f"[{ID_CHARACTERS}]+"  # the whole id (the length is checked apart); RE2 and re agree on it
ID_PATTERN = rf"^[{ID_CHARACTERS}]{{1,{MAX_ID_LENGTH}}}$"

# The violations, in the order they are checked (the first one found is the id's reason).
ID_VIOLATIONS = ("missing", "id_too_long", "id_bad_characters")

_CHARACTERS = re.compile(ID_CHARACTERS_REGEX)


def id_violation(value: str | None) -> str | None:
    """Why `value` is not a valid id (one of ``ID_VIOLATIONS``), or None if it is one."""
    if value is None or not value.strip(" "):  # as SQL's trim(): only spaces
        return "missing"
    if len(value) > MAX_ID_LENGTH:
        return "id_too_long"
    if not _CHARACTERS.fullmatch(value):
        return "id_bad_characters"
    return None


def invalid_ids(ids: Iterable[str]) -> list[tuple[str, str]]:
    """(id, violation) for every id in `ids` that breaks the contract, in order."""
    return [(value, violation) for value in ids if (violation := id_violation(value)) is not None]
