"""Experiment assignment: which variant a user sees, as a pure function of the user id.

The one definition of assignment, used by the server (it must not import pipelines/) and by the
readout and its tests (pipelines/experiments/ imports it). A user's position in an experiment is a
salted SHA-256 of ``<experiment name>:<salt>:<user id>`` mapped to [0, 1): sticky across restarts,
replicas and processes (unlike Python's ``hash``, which is randomised per process), and independent
between experiments because each experiment hashes with its own name and salt. Variants take
consecutive slices of [0, 1) in the order given, so a share that grows (a canary's ramp) keeps every
user it already had when it is laid out first.

Standard library only: nothing heavy at import.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

# 2**64: the position is the first 8 bytes of the digest as an unsigned integer over this.
_SCALE = float(1 << 64)


def bucket(user_id: str, experiment: str, salt: str = "") -> float:
    """The user's position in [0, 1) for this experiment: uniform over users, stable forever."""
    digest = hashlib.sha256(f"{experiment}:{salt}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def variant_at(position: float, shares: Sequence[tuple[str, float]]) -> str | None:
    """The variant whose slice of [0, 1) holds `position`; None past the last slice (shares below 1:
    the user is not in the experiment)."""
    edge = 0.0
    for name, share in shares:
        edge += share
        if position < edge:
            return name
    return None


def assign(user_id: str, experiment: str, shares: Sequence[tuple[str, float]], salt: str = "") -> str | None:
    """The variant `user_id` gets in `experiment`, given (variant, share) pairs in layout order."""
    return variant_at(bucket(user_id, experiment, salt), shares)


__all__ = ["assign", "bucket", "variant_at"]
