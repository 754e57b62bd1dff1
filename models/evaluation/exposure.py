"""Who gets seen: exposure and calibration metrics of top-k lists for the bias audit (pure numpy).

Each function takes the lists as a users x k matrix of item indices (-1 = empty slot), like
``models.metrics``, and answers one question:

- :func:`exposure_gini`: how unequally the lists' slots are spread over the items that could be
  shown (0 = every eligible item shown equally often, towards 1 = a few items take every slot).
  Items never shown count, with exposure 0: that is the inequality being measured.
- :func:`long_tail_share`: the share of slots given to the long tail (the bottom 80% of items by
  popularity) beside the tail's share of the interactions, so "the tail gets 5% of the slots" can
  be read against "and 30% of what people do".
- :func:`group_exposure`: each group's (category, seller) share of the slots beside its share of
  the eligible catalog.
- :func:`calibration_kl`: Steck's miscalibration (Calibrated Recommendations, RecSys 2018), per
  user, KL(p || q~) between the category mix p of the user's history and q of the list, with
  q~ = (1 - alpha) q + alpha p so that a category missing from the list costs a finite amount
  (alpha = 0.01 as in the paper). Every history item and every list slot weighs the same.
- :func:`mean_ci` and :func:`gap_change`: accuracy per segment with a normal-approximation
  confidence interval over users, and whether the gap between two segments moved from one model
  to another (a paired z-test on per-user differences; see its docstring).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import erf, sqrt

import numpy as np
import scipy.sparse as sp

from models.lists.rules import category_mix

STECK_ALPHA = 0.01
LONG_TAIL_SHARE = 0.8  # the bottom 80% of items by popularity form the long tail


def exposure_counts(recommended: np.ndarray, n_items: int, k: int) -> np.ndarray:
    """Slots per item in the users' top k (index = item index)."""
    top = recommended[:, :k]
    return np.bincount(top[top >= 0], minlength=n_items).astype(np.float64)


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values: 0 when all are equal, (n - 1) / n when one holds everything.

    The sorted-rank form: G = sum_i (2 i - n - 1) x_(i) / (n sum x), x ascending, i from 1.
    An all-zero or empty vector has no inequality to speak of: 0.
    """
    x = np.sort(np.asarray(values, dtype=np.float64))
    if len(x) == 0 or x.sum() <= 0:
        return 0.0
    if (x < 0).any():
        raise ValueError("gini needs non-negative values (exposure counts)")
    n = len(x)
    ranks = np.arange(1, n + 1)
    return float(((2 * ranks - n - 1) * x).sum() / (n * x.sum()))


def exposure_gini(recommended: np.ndarray, k: int, eligible: np.ndarray) -> float:
    """Gini of top-k exposure over the eligible items (a boolean mask over the catalog)."""
    counts = exposure_counts(recommended, len(eligible), k)
    return gini(counts[eligible])


def long_tail_items(popularity: np.ndarray, tail_share: float = LONG_TAIL_SHARE) -> np.ndarray:
    """Mask of the long tail: the least popular `tail_share` of items (ties broken by item index)."""
    n_tail = int(np.floor(tail_share * len(popularity)))
    tail = np.zeros(len(popularity), dtype=bool)
    tail[np.argsort(popularity, kind="stable")[:n_tail]] = True
    return tail


def long_tail_share(
    recommended: np.ndarray, popularity: np.ndarray, k: int, tail_share: float = LONG_TAIL_SHARE
) -> tuple[float, float]:
    """(share of the top-k slots on long-tail items, the long tail's share of the interactions).

    `popularity` counts interactions per item (distinct users in training), so the second number
    is what a list that mirrored behaviour would give the tail.
    """
    tail = long_tail_items(popularity, tail_share)
    counts = exposure_counts(recommended, len(popularity), k)
    shown = float(counts[tail].sum() / counts.sum()) if counts.sum() else 0.0
    total = float(np.sum(popularity))
    return shown, float(popularity[tail].sum() / total) if total else 0.0


@dataclass(frozen=True)
class GroupExposure:
    """Per group (code = index): share of the top-k slots and share of the eligible catalog."""

    exposure: np.ndarray
    catalog: np.ndarray

    @property
    def ratio(self) -> np.ndarray:
        """Exposure over catalog share: 1 = shown in proportion to its size, 0 for a group with no items."""
        return np.divide(self.exposure, self.catalog, out=np.zeros_like(self.exposure), where=self.catalog > 0)


def group_exposure(recommended: np.ndarray, groups: np.ndarray, k: int, eligible: np.ndarray) -> GroupExposure:
    """Exposure share and catalog share of each group; items of group -1 (unknown) are left out of both."""
    n_groups = int(groups.max()) + 1 if len(groups) and groups.max() >= 0 else 0
    counts = exposure_counts(recommended, len(groups), k)
    known = groups >= 0
    shown = np.bincount(groups[known], weights=counts[known], minlength=n_groups)
    sizes = np.bincount(groups[known & eligible], minlength=n_groups).astype(np.float64)
    return GroupExposure(shown / shown.sum() if shown.sum() else shown, sizes / sizes.sum() if sizes.sum() else sizes)


def list_matrix(recommended: np.ndarray, n_items: int, k: int) -> sp.csr_matrix:
    """The top k of each row as a users x items 0/1 matrix (for :func:`category_mix`)."""
    top = recommended[:, :k]
    rows, cols = np.nonzero(top >= 0)
    return sp.csr_matrix((np.ones(len(rows)), (rows, top[rows, cols])), shape=(len(top), n_items))


def kl_calibration(p: np.ndarray, q: np.ndarray, alpha: float = STECK_ALPHA) -> np.ndarray:
    """Row-wise KL(p || (1 - alpha) q + alpha p) in nats; NaN where p is empty (no history to calibrate to)."""
    if not 0 < alpha <= 1:
        raise ValueError(f"Steck's alpha must be in (0, 1], got {alpha}")
    smoothed = (1 - alpha) * q + alpha * p
    ratio = np.divide(p, smoothed, out=np.ones_like(p), where=p > 0)
    kl = (p * np.log(ratio)).sum(axis=1)
    return np.where(p.sum(axis=1) > 0, kl, np.nan)


def calibration_kl(
    recommended: np.ndarray, history: sp.csr_matrix, categories: np.ndarray, k: int, alpha: float = STECK_ALPHA
) -> np.ndarray:
    """Per user (row): Steck's KL between the category mix of the history row and of the top-k list.

    NaN for a user without history (nothing to be calibrated to) or with an empty list.
    """
    n_categories = int(categories.max()) + 1 if len(categories) else 1
    p = category_mix(history, categories, n_categories)
    q = category_mix(list_matrix(recommended, len(categories), k), categories, n_categories)
    kl = kl_calibration(p, q, alpha)
    return np.where(q.sum(axis=1) > 0, kl, np.nan)


def segment_means(values: np.ndarray, labels: np.ndarray, segments: tuple[str, ...]) -> dict[str, float]:
    """Mean of the finite values per segment label (NaN for a segment without one)."""
    out = {}
    for segment in segments:
        chosen = values[(labels == segment) & np.isfinite(values)]
        out[segment] = float(chosen.mean()) if len(chosen) else float("nan")
    return out


@dataclass(frozen=True)
class MeanCI:
    mean: float
    low: float
    high: float
    n: int


def mean_ci(values: np.ndarray, z: float = 1.96) -> MeanCI:
    """Mean over users with a normal-approximation interval, mean +- z x sample std / sqrt(n).

    Per-user NDCG is bounded and users are many, so the mean is close to normal; with one user
    the interval is just the point.
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    n = len(values)
    if n == 0:
        return MeanCI(float("nan"), float("nan"), float("nan"), 0)
    half = z * values.std(ddof=1) / sqrt(n) if n > 1 else 0.0
    mean = float(values.mean())
    return MeanCI(mean, mean - half, mean + half, n)


@dataclass(frozen=True)
class GapChange:
    """How the gap between segments a and b (mean of a minus mean of b) moved from the reference to the new model."""

    gap_new: float
    gap_reference: float
    change: float
    z: float
    p_value: float
    n_a: int
    n_b: int

    def significant(self, level: float = 0.05) -> bool:
        return bool(self.p_value < level)


def _two_sided_p(z: float) -> float:
    return float(2 * (1 - 0.5 * (1 + erf(abs(z) / sqrt(2))))) if np.isfinite(z) else float("nan")


def gap_change(new: np.ndarray, reference: np.ndarray, labels: np.ndarray, a: str, b: str) -> GapChange:
    """Did the accuracy gap between segments `a` and `b` change from `reference` to `new`?

    Both models are scored on the same users (the same fold), so the test is paired: with
    d_u = new_u - reference_u, the change of the gap is mean_a(d) - mean_b(d), whose variance is
    var_a(d) / n_a + var_b(d) / n_b (the two segments are disjoint sets of users, hence independent).
    Pairing removes the users' own difficulty, which unpaired gap-minus-gap would count twice.
    z = change / its standard error, two-sided p from the normal.
    """
    new, reference = np.asarray(new, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if new.shape != reference.shape or new.shape != labels.shape:
        raise ValueError(
            f"gap_change needs one value per user on both sides: {new.shape}, {reference.shape}, {labels.shape}"
        )
    ok = np.isfinite(new) & np.isfinite(reference)
    in_a, in_b = ok & (labels == a), ok & (labels == b)
    n_a, n_b = int(in_a.sum()), int(in_b.sum())
    if n_a < 2 or n_b < 2:
        nan = float("nan")
        return GapChange(nan, nan, nan, nan, nan, n_a, n_b)
    d = new - reference
    gap_new = float(new[in_a].mean() - new[in_b].mean())
    gap_ref = float(reference[in_a].mean() - reference[in_b].mean())
    change = float(d[in_a].mean() - d[in_b].mean())
    se = sqrt(d[in_a].var(ddof=1) / n_a + d[in_b].var(ddof=1) / n_b)
    if se > 0:
        z = change / se
        p_value = _two_sided_p(z)
    else:  # every user moved by the same amount within each segment: no noise to test against
        z = 0.0 if change == 0 else float(np.sign(change)) * float("inf")
        p_value = 1.0 if change == 0 else 0.0
    return GapChange(gap_new, gap_ref, change, float(z), p_value, n_a, n_b)
