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
YAML, no declaration parser and nothing of pipelines/ to route a request. That file's contract is
here too (``STATE_FILE``, ``read_state_file``, ``update_state_file``, ``RunningExperiment``): the CLI
writes it, a server rolling a canary back writes it, and every server reads it (serving/variants.py).
Standard library only: nothing heavy at import.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

# The arm of the users who get the popularity fallback instead of any variant.
HOLDBACK = "holdback"

# The state of every experiment, under RECFORGE_HOME: written by `recforge experiments start|stop`
# (pipelines/experiments/state.py) and by a server rolling a canary back; read by every server.
STATE_FILE = "experiments/state.json"
RUNNING = "running"
SHARE_TOLERANCE = 1e-9

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

    @property
    def control(self) -> str:
        """The first declared variant: what a canary is judged against, and what its users see after a rollback."""
        return self.variants[0][0]

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


class ExperimentStateError(ValueError):
    """The state file, or one experiment in it, cannot be used; the message names the file, experiment and field."""


def read_state_file(path: Path, display: Path | str | None = None) -> dict[str, dict]:
    """The state: experiment name -> entry ({} when no experiment was ever started). Errors name the file as
    `display` (default: its path; the server names it relative to RECFORGE_HOME, never its absolute path)."""
    display = path if display is None else display
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ExperimentStateError(f"{display}: unreadable experiment state: {error}") from None
    if not isinstance(state, dict) or not all(isinstance(entry, dict) for entry in state.values()):
        raise ExperimentStateError(f"{display}: unreadable experiment state: not a JSON object of experiment entries")
    return state


def update_state_file(path: Path, change: Callable[[dict], object]) -> object:
    """Read, change and atomically replace the state under an exclusive lock, so the CLI's start/stop
    and a server's rollback never lose each other's write; returns what `change` returned."""
    import fcntl  # POSIX, as the rest of the file layout; imported here so that nothing is loaded at import

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = read_state_file(path)
        result = change(state)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        os.replace(partial, path)
    return result


@dataclass(frozen=True)
class RunningExperiment:
    """One running experiment as the server routes it: who gets which publication version, until when,
    and whether its canary was rolled back (then the canary's share is 0 everywhere, its users see the control).

    ``publications`` maps every variant, shadow ones included, to the publication version that answers for it
    (registry aliases are resolved by `recforge experiments start`, so the server never asks the registry).
    ``limits`` are the canary's declared rollback limits (max_error_rate, max_p99_seconds; missing ones
    come from the server's settings) and max_ctr_drop (judged only when declared).
    """

    assignment: Assignment
    publications: dict[str, str]
    start: datetime
    end: datetime
    limits: dict[str, float] = field(default_factory=dict)
    rolled_back: dict | None = None

    @property
    def name(self) -> str:
        return self.assignment.experiment

    def active(self, now: datetime) -> bool:
        return self.start <= now < self.end

    def shares(self, now: datetime) -> list[tuple[str, float]]:
        """(arm, share) in layout order now; a rolled-back canary keeps its slot at share 0."""
        assignment = self.assignment
        if self.rolled_back is not None and assignment.canary is not None:
            assignment = replace(assignment, schedule=((datetime.min.replace(tzinfo=UTC), 0.0),))
        return assignment.shares_at(now)

    @classmethod
    def from_state(cls, name: str, entry: dict, where: Path | str) -> RunningExperiment:
        """Parse and check one running entry; anything wrong raises ExperimentStateError naming the field."""

        def fail(field_name: str, why: str) -> ExperimentStateError:
            return ExperimentStateError(f"{where}: experiment {name!r}: {field_name}: {why}")

        try:
            assignment = Assignment.from_json(entry["assignment"])
        except (KeyError, TypeError, ValueError) as error:
            raise fail("assignment", f"unreadable ({type(error).__name__}: {error})") from None
        if assignment.experiment != name:
            raise fail("assignment.experiment", f"names {assignment.experiment!r}")
        shares = [share for _, share in assignment.variants] + [assignment.holdback]
        shares += [share for _, share in assignment.schedule]
        if not all(math.isfinite(s) and 0 <= s <= 1 for s in shares):
            raise fail("assignment", f"every share must lie in [0, 1], not {shares}")
        total = sum(share for _, share in assignment.variants) + assignment.holdback
        if total > 1 + SHARE_TOLERANCE:
            raise fail("assignment", f"shares sum to {total:g}, more than 1")
        names = [n for n, _ in assignment.variants]
        if assignment.canary is not None and assignment.canary not in names[1:]:
            raise fail("assignment.canary", f"{assignment.canary!r} is not a challenger variant")
        publications = entry.get("publications")
        if not isinstance(publications, dict):
            raise fail(
                "publications", "missing: start it again with this recforge (it resolves each variant's version)"
            )
        for variant in (*names, *assignment.shadow):
            version = publications.get(variant)
            if not isinstance(version, str) or not version or "/" in version or version.startswith("."):
                raise fail(f"publications.{variant}", f"must name a publication version, not {version!r}")
        try:
            start, end = datetime.fromisoformat(entry["start"]), datetime.fromisoformat(entry["end"])
        except (KeyError, TypeError, ValueError) as error:
            raise fail("start/end", f"unreadable ({type(error).__name__}: {error})") from None
        if any(moment.tzinfo is None for moment in (start, end, *(at for at, _ in assignment.schedule))):
            raise fail("start/end/schedule", "every moment must carry a time zone")
        limits = entry.get("canary_rollback") or {}
        if not isinstance(limits, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < math.inf for v in limits.values()
        ):
            raise fail("canary_rollback", f"must map limits to positive numbers, not {limits!r}")
        rolled_back = entry.get("rollback")
        if rolled_back is not None and not isinstance(rolled_back, dict):
            raise fail("rollback", f"must be an object, not {rolled_back!r}")
        return cls(assignment, dict(publications), start, end, {k: float(v) for k, v in limits.items()}, rolled_back)


def running_experiments(path: Path, display: Path | str | None = None) -> tuple[list[RunningExperiment], list[str]]:
    """The running experiments the state file holds, and one line per entry that cannot be used (skipped:
    its users get the live publication). An unreadable file raises ExperimentStateError."""
    display = path if display is None else display
    running, problems = [], []
    for name, entry in sorted(read_state_file(path, display).items()):
        if entry.get("status") != RUNNING:
            continue
        try:
            running.append(RunningExperiment.from_state(name, entry, display))
        except ExperimentStateError as error:
            problems.append(str(error))
    return running, problems


__all__ = [
    "HOLDBACK",
    "RUNNING",
    "STATE_FILE",
    "Assignment",
    "ExperimentStateError",
    "RunningExperiment",
    "assign",
    "bucket",
    "read_state_file",
    "running_experiments",
    "update_state_file",
    "variant_at",
]
