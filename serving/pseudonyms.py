"""Keyed pseudonyms of user ids: the one definition that ingest, the collector and the API share.

With ``RECFORGE_PSEUDONYMIZE_USER_IDS=true`` every user id is replaced at ingest by its pseudonym,
``ps-`` + the first 32 hex digits (128 bits) of HMAC-SHA256(key, id), so the warehouse, the models
and the publications never hold the id an app sent. The API accepts the raw id and hashes it the
same way before its lookup (apps need not change) and answers with the id it was sent; the
collector (``POST /v1/events``) hashes before it stores, so the stream and the daily files agree.

Why this shape:
- A keyed hash, not a plain one: a user id is short and guessable, so SHA-256 of it could be
  reversed by hashing every plausible id; without the key it cannot.
- A pseudonym obeys the id contract (serving/ids.py: 35 characters of ``[a-z0-9-]``), so every
  stage and the C fast path take it as any id.
- Hashing is idempotent: a value that already is a pseudonym (``ps-`` + 32 lowercase hex) is kept.
  The collector's events are hashed once when collected and pass ingest unchanged; an app may also
  ask for a pseudonym directly. A raw id of that exact form is read as a pseudonym (documented in
  docs/architecture.md, "Privacy").
- The key is a secret (``RECFORGE_PSEUDONYM_KEY``, at least 32 characters, or the first line of
  ``RECFORGE_PSEUDONYM_KEY_FILE``, which must be readable by its owner only). It is never logged:
  errors name the variable and show ``<hidden>``; ``repr`` of the hasher shows no key. Changing the
  key changes every pseudonym: users then start afresh (the old pseudonyms are never matched again).

This module imports only the standard library and pydantic's ``Field``, so every side imports it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

from pydantic import Field, SecretStr

__all__ = [
    "KEY_MIN_LENGTH",
    "PSEUDONYMIZE_USER_IDS",
    "PSEUDONYM_KEY",
    "PSEUDONYM_KEY_FILE",
    "PSEUDONYM_PREFIX",
    "Pseudonymizer",
    "is_pseudonym",
    "pseudonym_key",
]

PSEUDONYM_PREFIX = "ps-"
PSEUDONYM_HEX_DIGITS = 32
KEY_MIN_LENGTH = 32
_PSEUDONYM = re.compile(rf"{PSEUDONYM_PREFIX}[0-9a-f]{{{PSEUDONYM_HEX_DIGITS}}}", re.ASCII)

# The settings, declared once for pipelines.settings.Settings and serving.config.ServingSettings.
PSEUDONYMIZE_USER_IDS = Field(
    default=False,
    description="Replace every user id by its keyed pseudonym at ingest and in the collector; the API hashes "
    "the id it is asked for the same way. Needs RECFORGE_PSEUDONYM_KEY or RECFORGE_PSEUDONYM_KEY_FILE.",
)
PSEUDONYM_KEY = Field(
    default=None,
    min_length=KEY_MIN_LENGTH,
    description=f"The pseudonyms' HMAC secret (at least {KEY_MIN_LENGTH} characters); never logged.",
)
PSEUDONYM_KEY_FILE = Field(
    default=None,
    description="A file whose first line is the pseudonyms' secret (mode 0600), instead of the variable.",
)


def is_pseudonym(value: str) -> bool:
    """Whether `value` already has the pseudonym form (then hashing keeps it)."""
    return _PSEUDONYM.fullmatch(value) is not None


class Pseudonymizer:
    """`pseudonymize(user_id) -> pseudonym`, under one key (held privately: repr shows no key)."""

    __slots__ = ("_keyed",)

    def __init__(self, key: bytes):
        # The keyed state once; each id copies it (half the work of hmac.new per call, on serving's hot path).
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)

    def __call__(self, user_id: str) -> str:
        if _PSEUDONYM.fullmatch(user_id):
            return user_id
        mac = self._keyed.copy()
        mac.update(user_id.encode())
        return PSEUDONYM_PREFIX + mac.hexdigest()[:PSEUDONYM_HEX_DIGITS]

    def __repr__(self) -> str:
        return "Pseudonymizer(key=<hidden>)"


def pseudonym_key(enabled: bool, key: SecretStr | None, key_file: Path | None, prefix: str) -> bytes | None:
    """The secret the settings name, or None when pseudonymisation is off; a ValueError (one line,
    naming the variable, never the key) when it is on without a usable key.

    Both settings classes call this from a model validator, so a wrong key stops the CLI, the DAG
    files and the server at start, before any id is written under a wrong or missing key.
    """
    variable = f"{prefix}PSEUDONYM_KEY"
    if key is not None and key_file is not None:
        raise ValueError(f"{variable} and {variable}_FILE are both set: set one")
    if key_file is not None:
        path = Path(key_file).expanduser()
        try:
            mode = path.stat().st_mode
            text = path.read_text().splitlines()[0].strip() if path.stat().st_size else ""
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or "not text"
            raise ValueError(f"{variable}_FILE={str(path)!r}: cannot read it ({reason})") from None
        if mode & 0o077:
            raise ValueError(f"{variable}_FILE={str(path)!r}: must be readable by its owner only (chmod 600 it)")
        if len(text) < KEY_MIN_LENGTH:
            raise ValueError(
                f"{variable}_FILE={str(path)!r}: its first line must hold a secret of at least {KEY_MIN_LENGTH} "
                "characters"
            )
        secret = text.encode()
    else:
        secret = key.get_secret_value().encode() if key is not None else None
    if not enabled:
        return None
    if secret is None:
        raise ValueError(
            f"{prefix}PSEUDONYMIZE_USER_IDS=true needs a secret: set {variable} (at least {KEY_MIN_LENGTH} "
            f"characters) or {variable}_FILE"
        )
    return secret
