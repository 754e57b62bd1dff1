"""Experiment assignment: which variant a user sees, as a pure function of the user id.

The one definition of assignment, used by the server (it must not import pipelines/) and by the
readout and its tests (pipelines/experiments/ imports it). A user's position in an experiment is a
salted SHA-256 of ``<experiment name>:<salt>:<user id>`` mapped to [0, 1): sticky across restarts,
replicas and processes (unlike Python's ``hash``, which is randomised per process), and independent
between experiments because each experiment hashes with its own name and salt. Variants take
consecutive slices of [0, 1) in the order given, so a share that grows (a canary's ramp) keeps every
user it already had when it is laid out first.

An experiment's assignment travels to the server as plain JSON (``Assignment.to_json``), which
`recforge experiments start` writes into RECFORGE_HOME/experiments/state.json: the server needs no
YAML, no declaration parser and nothing of pipelines/ to route a request. Standard library only:
nothing heavy at import.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

# The arm of the users who get the popularity fallback instead of any variant.
HOLDBACK = "holdback"

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


@dataclass(frozen=True)
class Assignment:
    """Everything the server needs to route users of one experiment, and nothing more.

    ``variants`` are (name, declared share) in declared order, the first the control; a ``canary``
    variant's share follows ``schedule`` ((moment, share) steps, UTC) until its last step, the part not
    yet ramped going to the control; the holdback takes the last slice. ``shadow`` variants are
    computed and logged as shadow, never shown.
    """

    experiment: str
    salt: str
    variants: tuple[tuple[str, float], ...]
    holdback: float = 0.0
    canary: str | None = None
    schedule: tuple[tuple[datetime, float], ...] = ()
    shadow: tuple[str, ...] = ()

    def shares_at(self, when: datetime | None = None) -> list[tuple[str, float]]:
        """(arm, share) in layout order at `when` (None: as declared, the canary fully ramped).

        The canary is laid out first, so its growing slice keeps the users it had and the other arms
        never move.
        """
        shares = dict(self.variants)
        order = list(shares)
        if self.canary is not None:
            if when is not None:
                ramped = 0.0
                for at, share in self.schedule:
                    if at <= when:
                        ramped = share
                shares[order[0]] += shares[self.canary] - ramped
                shares[self.canary] = ramped
            order.remove(self.canary)
            order.insert(0, self.canary)
        pairs = [(name, shares[name]) for name in order]
        if self.holdback > 0:
            pairs.append((HOLDBACK, self.holdback))
        return pairs

    def variant(self, user_id: str, when: datetime | None = None) -> str | None:
        return assign(user_id, self.experiment, self.shares_at(when), self.salt)

    def to_json(self) -> dict:
        return {
            "experiment": self.experiment, "salt": self.salt, "variants": [list(v) for v in self.variants],
            "holdback": self.holdback, "canary": self.canary,
            "schedule": [[at.isoformat(), share] for at, share in self.schedule], "shadow": list(self.shadow),
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict) -> Assignment:
        return cls(
            data["experiment"], data["salt"], tuple((str(n), float(s)) for n, s in data["variants"]),
            float(data.get("holdback", 0.0)), data.get("canary"),
            tuple((datetime.fromisoformat(at), float(s)) for at, s in data.get("schedule", ())),
            tuple(data.get("shadow", ())),
        )  # fmt: skip


__all__ = ["HOLDBACK", "Assignment", "assign", "bucket", "variant_at"]
