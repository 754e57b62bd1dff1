"""The statistics of an experiment readout: numpy and scipy only (no warehouse, Airflow or MLflow), so
the calibration tests run them on seeded synthetic data exactly as the readout runs them on logs.

Users are the randomisation unit, so every metric is a ratio of per-user sums (clicks / impressions,
...) and its variance comes from the delta method on those per-user sums, never from impressions
treated as independent (a user's impressions are correlated; Deng, Knoblich and Lu 2018, "Applying
the delta method in metric analytics", KDD). Around that:

- Sample-ratio mismatch: a chi-square of users per arm against the declared shares; below
  ``srm_alpha`` the assignment or the logging is broken and no effect is read.
- CUPED (Deng, Xu, Kohavi and Walker 2013, "Improving the sensitivity of online controlled experiments
  by utilizing pre-experiment data", WSDM): the linearised metric is adjusted by theta times the user's
  centred pre-period activity, theta pooled over arms. The pre-period cannot depend on the assignment,
  so the estimate stays unbiased and its variance shrinks by the squared correlation.
- Always-valid p-values: the normal mixture sequential probability ratio test (mSPRT) for a difference
  of means of Johari, Koomen, Pekelis and Walsh 2017, "Peeking at A/B tests: why it matters, and what to
  do about it" (KDD), with mixing variance tau^2 = (msprt_tau x the per-user standard deviation)^2. The
  readout recomputes every daily look from the start and keeps the running minimum of 1/Lambda, so a
  daily look does not inflate false positives; the matching confidence sequence bounds the difference.
- Holm's step-down correction of the primary metric's p-values over the challengers (more than two arms).
- Guardrails, and a decision (ship, stop, keep running) with its reasons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from scipy import stats as scipy_stats

SHIP, STOP, KEEP_RUNNING = "ship", "stop", "keep running"


@dataclass(frozen=True)
class UserDays:
    """Per (user, arm, day) sums, what the warehouse query returns; the rows of one user may span days.

    ``user`` holds codes 0..n_users-1, ``arm`` codes into the arm names, ``day`` the day index from the
    experiment's start; ``totals`` maps each metric to the per-row sum of its column; ``pre`` (one value
    per user code, or None) is the pre-period activity CUPED adjusts with.
    """

    user: np.ndarray
    arm: np.ndarray
    day: np.ndarray
    impressions: np.ndarray
    totals: dict[str, np.ndarray]
    n_users: int
    pre: np.ndarray | None = None


@dataclass(frozen=True)
class Srm:
    users: dict[str, int]
    expected: dict[str, float]
    chi2: float
    p_value: float
    alpha: float

    @property
    def passed(self) -> bool:
        return self.p_value >= self.alpha


@dataclass(frozen=True)
class Estimate:
    """A ratio metric of one arm: value and its fixed-horizon (1 - alpha) interval."""

    value: float
    low: float
    high: float
    variance: float


@dataclass(frozen=True)
class ArmResult:
    arm: str
    users: int
    impressions: int
    metrics: dict[str, Estimate]


@dataclass(frozen=True)
class Comparison:
    """One arm against the reference arm on one metric, at the latest look."""

    arm: str
    reference: str
    metric: str
    delta: float  # arm - reference (CUPED-adjusted when a pre-period is given)
    relative: float  # delta / reference value
    low: float  # always-valid confidence sequence of delta (intersected over the looks)
    high: float
    p_value: float  # always-valid (running minimum of 1 / Lambda over the looks)
    p_adjusted: float  # Holm over the challengers (the primary metric); equal to p_value otherwise
    variance_reduction: float  # 1 - var(CUPED) / var(plain); 0 without a pre-period
    p_by_look: list[float] = field(default_factory=list)

    def significant(self, alpha: float) -> bool:
        return self.p_adjusted < alpha


@dataclass
class Analysis:
    arms: list[ArmResult]
    srm: Srm
    comparisons: list[Comparison]
    decision: str
    reasons: list[str]
    looks: int
    excluded_users: int  # seen in more than one arm (a reshuffled salt, a canary ramp): left out
    reference: str
    primary_metric: str

    @property
    def blocked(self) -> bool:
        return not self.srm.passed

    def comparison(self, arm: str, metric: str) -> Comparison | None:
        return next((c for c in self.comparisons if c.arm == arm and c.metric == metric), None)


def srm_check(users: dict[str, int], shares: dict[str, float], alpha: float) -> Srm:
    """Chi-square goodness of fit of users per arm against the declared (or first-exposure) shares."""
    names = list(shares)
    observed = np.array([users.get(n, 0) for n in names], dtype=float)
    share = np.array([shares[n] for n in names], dtype=float)
    total = observed.sum()
    if total == 0 or len(names) < 2:
        return Srm(dict(users), {n: 0.0 for n in names}, 0.0, 1.0, alpha)
    expected = share / share.sum() * total
    chi2, p_value = scipy_stats.chisquare(observed, expected)
    return Srm(dict(users), dict(zip(names, expected.tolist(), strict=True)), float(chi2), float(p_value), alpha)


def linearised(y: np.ndarray, n: np.ndarray) -> tuple[float, np.ndarray]:
    """The ratio sum(y) / sum(n) and each user's contribution to its error (delta method)."""
    ratio = y.sum() / n.sum()
    return float(ratio), (y - ratio * n) / n.mean()


def cuped_theta(parts: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """theta = cov(l, x) / var(x) pooled within arms; `parts` holds (linearised l, pre-period x) per arm."""
    # Elementwise products, not np.dot: BLAS threads spin against each other on a busy machine.
    centred = [(l_, x - x.mean()) for l_, x in parts]
    covariance = sum(float((l_ * c).sum()) for l_, c in centred)
    variance = sum(float((c * c).sum()) for _, c in centred)
    return covariance / variance if variance > 0 else 0.0


def msprt_p(delta: float, variance: float, tau2: float) -> float:
    """1 / Lambda of the normal-mixture SPRT of H0: difference 0, capped at 1 (Johari et al. 2017, eq. 11)."""
    if variance <= 0 or tau2 <= 0:
        return 1.0
    log_lambda = 0.5 * math.log(variance / (variance + tau2)) + tau2 * delta**2 / (2 * variance * (variance + tau2))
    return float(min(1.0, math.exp(-log_lambda)))


def msprt_radius(variance: float, tau2: float, alpha: float) -> float:
    """Half-width of the always-valid (1 - alpha) confidence sequence: the differences mSPRT keeps."""
    if variance <= 0 or tau2 <= 0:
        return math.inf
    return math.sqrt(
        2 * variance * (variance + tau2) / tau2 * (math.log(1 / alpha) + 0.5 * math.log((variance + tau2) / variance))
    )


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error at most alpha for any dependence)."""
    order = sorted(range(len(p_values)), key=p_values.__getitem__)
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


class _Cumulative:
    """Users' running sums over the daily looks: rows are sorted by day once and each look adds only its
    own day's rows, so reading every look costs one pass over the rows (plus the users per look)."""

    def __init__(self, data: UserDays, metrics: list[str]):
        self.data, self.metrics = data, metrics
        self.order = np.argsort(data.day, kind="stable")
        self.ends = np.searchsorted(
            data.day[self.order], np.arange(int(data.day.max()) + 1 if len(data.day) else 0), "right"
        )
        self.done = 0
        self.impressions = np.zeros(data.n_users)
        self.sums = {m: np.zeros(data.n_users) for m in metrics}

    def through(self, day: int) -> None:
        rows = self.order[self.done : self.ends[day]]
        self.done = self.ends[day]
        users = self.data.user[rows]
        self.impressions += np.bincount(users, weights=self.data.impressions[rows], minlength=self.data.n_users)
        for m in self.metrics:
            self.sums[m] += np.bincount(users, weights=self.data.totals[m][rows], minlength=self.data.n_users)


def _look(running: _Cumulative, arm_of_user: np.ndarray, keep: np.ndarray, n_arms: int) -> dict[int, dict]:
    """Per arm: users' cumulative impressions, metric sums and pre-period at the current look."""
    present = (running.impressions > 0) & keep
    pre = running.data.pre
    arms = {}
    for a in range(n_arms):
        members = present & (arm_of_user == a)
        arms[a] = {
            "n": running.impressions[members],
            "y": {m: running.sums[m][members] for m in running.metrics},
            "x": pre[members] if pre is not None else None,
        }
    return arms


def _estimates(arm: dict, metric: str, theta: float, x_mean: float) -> tuple[float, float, float]:
    """(CUPED-adjusted ratio, its variance, the plain variance) of one arm."""
    n, y, x = arm["n"], arm["y"][metric], arm["x"]
    if len(n) < 2:
        return (float(y.sum() / n.sum()) if n.sum() else math.nan), math.inf, math.inf
    ratio, contribution = linearised(y, n)
    plain = float(contribution.var(ddof=1) / len(n))
    if x is None or theta == 0.0:
        return ratio, plain, plain
    adjusted = contribution - theta * (x - x.mean())
    return ratio - theta * (float(x.mean()) - x_mean), float(adjusted.var(ddof=1) / len(n)), plain


def analyse(
    data: UserDays,
    arms: list[str],
    expected_shares: dict[str, float],
    reference: str,
    challengers: list[str],
    metrics: list[str],
    primary_metric: str,
    guardrails: list[tuple[str, float]] = (),
    *,
    alpha: float = 0.05,
    srm_alpha: float = 0.001,
    msprt_tau: float = 0.05,
    ended: bool = False,
) -> Analysis:
    """Every daily look from the first to the last day in `data`, then the decision at the last one.

    `arms` names the arm codes; `challengers` are the arms that may ship (compared with `reference`,
    Holm-corrected on `primary_metric`); any other arm (a holdback) is compared for information only.
    `guardrails` are (metric, max relative drop). `ended`: the declared end has passed.
    """
    z = float(scipy_stats.norm.ppf(1 - alpha / 2))
    # A user seen in several arms (a canary's ramp moved them) is excluded from every arm.
    first = np.full(data.n_users, -1)
    first[data.user] = data.arm
    mixed = np.zeros(data.n_users, dtype=bool)
    mixed[data.user[data.arm != first[data.user]]] = True
    keep = ~mixed
    arm_of_user = first
    last_day = int(data.day.max()) if len(data.day) else 0
    code = {name: i for i, name in enumerate(arms)}
    compared = [a for a in arms if a != reference]

    p_running = {(a, m): 1.0 for a in compared for m in metrics}
    p_looks: dict[tuple[str, str], list[float]] = {(a, m): [] for a in compared for m in metrics}
    interval = {(a, m): (-math.inf, math.inf) for a in compared for m in metrics}
    final: dict = {}
    running = _Cumulative(data, metrics)
    for day in range(last_day + 1) if len(data.day) else []:
        running.through(day)
        look = _look(running, arm_of_user, keep, len(arms))
        for metric in metrics:
            theta = 0.0
            x_mean = 0.0
            if data.pre is not None:
                parts = [(linearised(v["y"][metric], v["n"])[1], v["x"]) for v in look.values() if len(v["n"]) > 1]
                theta = cuped_theta(parts)
                xs = [v["x"] for v in look.values() if len(v["n"])]
                x_mean = float(np.concatenate(xs).mean()) if xs else 0.0
            ref_value, ref_var, ref_plain = _estimates(look[code[reference]], metric, theta, x_mean)
            for name in compared:
                value, var, plain = _estimates(look[code[name]], metric, theta, x_mean)
                delta, variance = value - ref_value, var + ref_var
                n_arm, n_ref = len(look[code[name]]["n"]), len(look[code[reference]]["n"])
                if not math.isfinite(variance) or min(n_arm, n_ref) < 2:
                    p_looks[(name, metric)].append(p_running[(name, metric)])
                    continue
                # tau in units of the per-user standard deviation of the (linearised) metric, pooled
                per_user_var = (var * n_arm + ref_var * n_ref) / 2
                tau2 = (msprt_tau**2) * per_user_var
                p_running[(name, metric)] = min(p_running[(name, metric)], msprt_p(delta, variance, tau2))
                p_looks[(name, metric)].append(p_running[(name, metric)])
                radius = msprt_radius(variance, tau2, alpha)
                low, high = interval[(name, metric)]
                interval[(name, metric)] = (max(low, delta - radius), min(high, delta + radius))
                reduction = 1 - variance / (plain + ref_plain) if plain + ref_plain > 0 else 0.0
                final[(name, metric)] = (delta, delta / ref_value if ref_value else math.nan, reduction)
        final_look = look

    arm_results = []
    per_arm_users = {}
    for name in arms:
        if not len(data.day):
            arm_results.append(ArmResult(name, 0, 0, {}))
            per_arm_users[name] = 0
            continue
        part = final_look[code[name]]
        estimates = {}
        for metric in metrics:
            value, variance, _ = _estimates(part, metric, 0.0, 0.0)
            half = z * math.sqrt(variance) if math.isfinite(variance) else math.inf
            estimates[metric] = Estimate(value, value - half, value + half, variance)
        per_arm_users[name] = len(part["n"])
        arm_results.append(ArmResult(name, len(part["n"]), int(part["n"].sum()), estimates))
    srm = srm_check(per_arm_users, expected_shares, srm_alpha)

    comparisons = []
    for name in compared:
        for metric in metrics:
            delta, relative, reduction = final.get((name, metric), (math.nan, math.nan, 0.0))
            low, high = interval[(name, metric)]
            p_value = p_running[(name, metric)]
            comparisons.append(
                Comparison(name, reference, metric, delta, relative, low, high, p_value, p_value, reduction,
                           p_looks[(name, metric)])
            )  # fmt: skip
    primary = [c for c in comparisons if c.metric == primary_metric and c.arm in challengers]
    for c, adjusted in zip(primary, holm([c.p_value for c in primary]), strict=True):
        comparisons[comparisons.index(c)] = Comparison(**{**c.__dict__, "p_adjusted": adjusted})
    analysis = Analysis(
        arm_results, srm, comparisons, KEEP_RUNNING, [], last_day + 1 if len(data.day) else 0,
        int(mixed.sum()), reference, primary_metric,
    )  # fmt: skip
    analysis.decision, analysis.reasons = decide(analysis, challengers, guardrails, alpha, ended)
    return analysis


def decide(
    analysis: Analysis, challengers: list[str], guardrails: list[tuple[str, float]], alpha: float, ended: bool
) -> tuple[str, list[str]]:
    """Ship the best challenger that wins on the primary metric without breaking a guardrail; stop when
    assignment is broken, every challenger lost or broke one, or the experiment ended without a win;
    otherwise keep running. Every decision carries the sentences that led to it."""
    srm = analysis.srm
    if not srm.passed:
        counts = ", ".join(f"{a} {srm.users.get(a, 0)} (expected {e:.0f})" for a, e in srm.expected.items())
        return STOP, [
            f"sample ratio mismatch: users per arm {counts}, chi-square p = {srm.p_value:.2g} < {srm.alpha:g}; "
            "the assignment or the logging is broken, so no effect is read"
        ]
    empty = [a.arm for a in analysis.arms if a.users == 0]
    if empty:
        return KEEP_RUNNING, [f"no impressions yet for {', '.join(empty)}"]
    reasons, winners, losers = [], [], []
    metric = analysis.primary_metric
    for arm in challengers:
        primary = analysis.comparison(arm, metric)
        broken = []
        for guard_metric, max_drop in guardrails:
            guard = analysis.comparison(arm, guard_metric)
            if guard is not None and guard.relative < -max_drop and guard.p_value < alpha:
                broken.append(
                    f"{arm} breaks the {guard_metric} guardrail: {guard.relative:+.2%} vs {analysis.reference} "
                    f"(allowed -{max_drop:.0%}), always-valid p = {guard.p_value:.3g}"
                )
        reasons += broken
        if primary.significant(alpha) and primary.delta > 0 and not broken:
            winners.append(primary)
            reasons.append(
                f"{arm} beats {analysis.reference} on {metric}: {primary.relative:+.2%}, always-valid p = "
                f"{primary.p_value:.3g} (Holm-adjusted {primary.p_adjusted:.3g}) < {alpha:g}"
            )
        elif broken or (primary.significant(alpha) and primary.delta < 0):
            losers.append(arm)
            if not broken:
                reasons.append(
                    f"{arm} is worse than {analysis.reference} on {metric}: {primary.relative:+.2%}, "
                    f"adjusted p = {primary.p_adjusted:.3g}"
                )
        else:
            reasons.append(
                f"{arm} vs {analysis.reference} on {metric}: {primary.relative:+.2%}, adjusted always-valid p = "
                f"{primary.p_adjusted:.3g}, not below {alpha:g} yet"
            )
    if winners:
        best = max(winners, key=lambda c: c.delta)
        return SHIP, [f"ship {best.arm}", *reasons]
    if challengers and len(losers) == len(challengers):
        return STOP, [f"stop: every challenger lost or broke a guardrail; keep {analysis.reference}", *reasons]
    if ended:
        return STOP, [f"stop: the experiment ended without a significant win; keep {analysis.reference}", *reasons]
    return KEEP_RUNNING, reasons


def day_index(moments: np.ndarray, start: datetime) -> np.ndarray:
    """Whole days since `start` (the look a row belongs to)."""
    return ((moments - np.datetime64(start.replace(tzinfo=None), "us")) // np.timedelta64(1, "D")).astype(np.int64)
