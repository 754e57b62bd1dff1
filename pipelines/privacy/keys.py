"""The keyed hash that stands for a user id in the forget audit.

The audit must prove that a user was forgotten without keeping who: it stores
HMAC-SHA256(secret, user_id). Someone holding the secret can answer "was this user forgotten,
and when?"; the audit alone cannot be reversed by hashing every plausible id, as a plain hash
of a short id could. The secret comes from ``RECFORGE_PRIVACY_KEY`` or from a file
(``RECFORGE_PRIVACY_KEY_FILE``, default ``RECFORGE_HOME/privacy/forget.key``) generated with mode
0600 on first use. It is never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

from pipelines.settings import Settings

KEY_BYTES = 32


class PrivacyKeyError(RuntimeError):
    """The audit's secret cannot be read (a file that is empty, or readable by others)."""


def privacy_key(settings: Settings) -> bytes:
    """The HMAC secret: the setting, else the key file (created 0600 with 32 random bytes if absent)."""
    if settings.privacy_key is not None:
        return settings.privacy_key.get_secret_value().encode()
    path = settings.privacy_key_path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(KEY_BYTES) + "\n")
    if path.stat().st_mode & 0o077:
        raise PrivacyKeyError(f"{path}: the audit's secret must be readable by its owner only (chmod 600 it)")
    key = path.read_text().strip()
    if len(key) < KEY_BYTES:
        raise PrivacyKeyError(f"{path}: holds {len(key)} characters; the secret needs at least {KEY_BYTES}")
    return key.encode()


def keyed_hash(key: bytes, user_id: str) -> str:
    """HMAC-SHA256 of the id under the secret, hex: what the audit keeps instead of the id."""
    return hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()
