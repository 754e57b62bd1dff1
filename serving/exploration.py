"""Exploration: the logging policy's randomness, so off-policy estimates have propensities to work with.

The policy, per slot (chosen over per request: the same epsilon explores every position of a slate,
and each shown item's propensity stays a simple closed form). A slate of ``n`` ranked items is
shown as ranked, except that each slot independently, with probability ``epsilon``, is swapped for
an item of the *pool*: the allowed items outside the ranked slate (the catalogue less the blocklist,
the app's ``exclude`` and the slate's own items), the swapped slots taking a uniformly random sample
of the pool without replacement. Sampling without replacement leaves each swapped slot's item
uniform over the pool, so the probability of showing an item at slot ``j`` (its propensity, the
contract ``serving.impressions.format.PROPENSITIES`` names) is exactly

- ``1 - epsilon`` for the ranked item of slot ``j`` (the pool never holds it), and
- ``epsilon / M`` for an item of the pool, ``M`` the pool's size.

When the pool is smaller than the slate (a tiny catalogue), nothing is explored and every shown item
has propensity 1. With ``epsilon`` 0 nothing changes and every propensity is 1. Session answers are
deterministic (propensity 1); the shadow slates are not shown, so they carry no propensity.
"""

from __future__ import annotations

import random

import numpy as np

EXPLORE_REASON = "explore"  # the reason of a swapped slot in the answer (serving/schemas.py documents it)


def swapped_slots(count: int, epsilon: float, draw=random.random) -> list[int]:
    """The slots (0-based) of a slate of `count` items that exploration swaps: each with probability epsilon."""
    return [slot for slot in range(count) if draw() < epsilon]


def pool_size(n_items: int, slate_rows: np.ndarray, blocked: np.ndarray | None, excluded: np.ndarray | None) -> int:
    """Allowed items outside the slate: the catalogue less blocked, excluded and shown (counted once each)."""
    taken = set(slate_rows.tolist())
    if excluded is not None:
        taken.update(excluded.tolist())
    if blocked is not None:
        outside = [row for row in taken if not blocked[row]]
        return n_items - int(blocked.sum()) - len(outside)
    return n_items - len(taken)


def explore(
    rows: np.ndarray,
    scores: np.ndarray,
    n_items: int,
    blocked: np.ndarray | None,
    excluded: np.ndarray | None,
    epsilon: float,
    slots: list[int],
    rng: random.Random | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, scores, propensities) of the slate shown: `slots` swapped for pool items drawn without
    replacement (rejection sampling over the catalogue: the pool is nearly all of it); a swapped slot
    keeps the score of the item it replaced, so the answer's order stays the ranked one."""
    count = len(rows)
    size = pool_size(n_items, rows, blocked, excluded)
    if size < count:  # too small a pool to explore: as ranked, with certainty
        return rows, scores, np.ones(count)
    propensities = np.full(count, 1.0 - epsilon)
    if not slots:
        return rows, scores, propensities
    rng = rng or random
    taken = set(rows.tolist()) | (set(excluded.tolist()) if excluded is not None else set())
    shown = rows.astype(np.int64, copy=True)
    for slot in slots:
        while True:
            row = rng.randrange(n_items)
            if row not in taken and (blocked is None or not blocked[row]):
                break
        taken.add(row)
        shown[slot] = row
        propensities[slot] = epsilon / size
    return shown, scores, propensities


def propensity_of_ranked(n_items: int, count: int, epsilon: float) -> float:
    """The propensity of every item of an unexplored slate of `count` ranked items with no blocklist and no
    exclusions (the C path's answers): 1 - epsilon, or 1 when the pool (n_items - count) is smaller than the slate."""
    return 1.0 if n_items - count < count else 1.0 - epsilon
