"""Calibration of the readout's statistics on seeded synthetic traffic whose truth is known.

Each experiment is read out at every daily look (what a daily DAG does); A/A experiments must be declared
significant at most 10% of the time at alpha 0.05, a clearly better variant must win, a skewed assignment
must be caught by the SRM check, and CUPED must shrink the variance without moving the estimate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.experiments.contract import METRICS
from pipelines.experiments.declaration import parse_experiment
from pipelines.experiments.stats import KEEP_RUNNING, SHIP, STOP, UserDays, analyse, holm, msprt_p
from pipelines.experiments.synthetic import synthetic_traffic
from tests.experiments.conftest import declaration

DAYS = 14
TWO_ARMS = parse_experiment(
    declaration(
        holdback=None, shadow=None,
        variants=[{"name": "control", "alias": "champion", "share": 0.5},
                  {"name": "challenger", "alias": "challenger", "share": 0.5}],
    ),
    Path("two_arms.yaml"), 0,
)  # fmt: skip


def read_out(experiment, traffic, guardrails=(), ended=False, without_pre=False):
    days = traffic.days
    if without_pre:
        days = UserDays(days.user, days.arm, days.day, days.impressions, days.totals, days.n_users, None)
    challengers = [v.name for v in experiment.variants[1:]]
    return analyse(
        days, traffic.arms, dict(experiment.shares_at()), experiment.control, challengers, list(METRICS), "ctr",
        list(guardrails), ended=ended,
    )  # fmt: skip


def test_a_a_experiments_with_daily_looks_are_rarely_significant():
    """40 seeded A/A experiments, 14 daily looks each: at most 10% ever significant at alpha 0.05."""
    significant = []
    for seed in range(40):
        analysis = read_out(TWO_ARMS, synthetic_traffic(TWO_ARMS, 1500, DAYS, seed))
        assert analysis.looks == DAYS
        significant.append(analysis.decision == SHIP or analysis.comparison("challenger", "ctr").p_value < 0.05)
    assert np.mean(significant) <= 0.10, f"{sum(significant)} of 40 A/A experiments significant"


def test_daily_looks_with_a_fixed_horizon_test_would_have_failed_the_same_check():
    """The check can fail: a naive z-test peeked at daily declares far more A/A experiments significant."""
    from scipy import stats

    from pipelines.experiments.stats import linearised

    significant = 0
    for seed in range(40):
        d = synthetic_traffic(TWO_ARMS, 1500, DAYS, seed).days
        for day in range(DAYS):
            mask = d.day <= day
            parts = []
            for arm in (0, 1):
                rows = mask & (d.arm == arm)
                n = np.bincount(d.user[rows], weights=d.impressions[rows], minlength=d.n_users)
                y = np.bincount(d.user[rows], weights=d.totals["ctr"][rows], minlength=d.n_users)
                ratio, contribution = linearised(y[n > 0], n[n > 0])
                parts.append((ratio, contribution.var(ddof=1) / (n > 0).sum()))
            z = (parts[1][0] - parts[0][0]) / np.sqrt(parts[0][1] + parts[1][1])
            if 2 * stats.norm.sf(abs(z)) < 0.05:
                significant += 1
                break
    assert significant / 40 > 0.10


def test_a_clearly_better_variant_is_declared_a_win():
    analysis = read_out(TWO_ARMS, synthetic_traffic(TWO_ARMS, 6000, DAYS, seed=7, lifts={"challenger": 1.25}))
    assert analysis.srm.passed
    assert analysis.decision == SHIP, analysis.reasons
    assert analysis.reasons[0] == "ship challenger"
    ctr = analysis.comparison("challenger", "ctr")
    assert ctr.p_value < 0.05 and ctr.low > 0 and 0.1 < ctr.relative < 0.4


def test_a_clearly_worse_variant_is_stopped():
    analysis = read_out(TWO_ARMS, synthetic_traffic(TWO_ARMS, 6000, DAYS, seed=8, lifts={"challenger": 0.75}))
    assert analysis.decision == STOP
    assert "worse than control on ctr" in " ".join(analysis.reasons)


def test_a_skewed_assignment_is_caught_and_blocks_the_readout():
    """10% of the challenger's users lost (a broken redirect): SRM p < 0.001 stops it, and no effect is read."""
    traffic = synthetic_traffic(TWO_ARMS, 20_000, DAYS, seed=3, skew={"challenger": 0.1}, lifts={"challenger": 1.3})
    analysis = read_out(TWO_ARMS, traffic)
    assert analysis.srm.p_value < 0.001
    assert analysis.blocked and analysis.decision == STOP
    assert analysis.reasons[0].startswith("sample ratio mismatch")
    assert len(analysis.reasons) == 1  # the real lift is not reported as a win


def test_an_unskewed_assignment_passes_the_srm_check():
    analysis = read_out(TWO_ARMS, synthetic_traffic(TWO_ARMS, 20_000, DAYS, seed=3))
    assert analysis.srm.passed and not analysis.blocked


def test_cuped_reduces_the_variance_and_leaves_the_estimate_unbiased():
    """Over 30 seeded A/B experiments with a 10% lift: the CUPED difference varies less across seeds,
    both centre on the true difference, and the readout reports the reduction."""
    plain, adjusted, reductions = [], [], []
    for seed in range(30):
        traffic = synthetic_traffic(TWO_ARMS, 2000, 7, seed, lifts={"challenger": 1.1})
        with_pre = read_out(TWO_ARMS, traffic).comparison("challenger", "ctr")
        without = read_out(TWO_ARMS, traffic, without_pre=True).comparison("challenger", "ctr")
        plain.append(without.delta)
        adjusted.append(with_pre.delta)
        reductions.append(with_pre.variance_reduction)
        assert without.variance_reduction == 0
    assert np.var(adjusted) < 0.85 * np.var(plain)
    assert np.mean(reductions) > 0.15
    true_delta = 0.05 * 0.1  # base CTR x lift, approximately (propensities are capped at 1)
    for deltas in (plain, adjusted):
        standard_error = np.std(deltas, ddof=1) / np.sqrt(len(deltas))
        assert abs(np.mean(deltas) - true_delta) < 3 * standard_error + 5e-4


def test_holm_corrects_for_several_challengers():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    three = parse_experiment(
        declaration(
            holdback=None, shadow=None,
            variants=[{"name": "control", "alias": "champion", "share": 0.34},
                      {"name": "b", "version": "2", "share": 0.33}, {"name": "c", "version": "3", "share": 0.33}],
        ),
        Path("three.yaml"), 0,
    )  # fmt: skip
    analysis = read_out(three, synthetic_traffic(three, 9000, DAYS, seed=11, lifts={"c": 1.3}))
    b, c = analysis.comparison("b", "ctr"), analysis.comparison("c", "ctr")
    assert b.p_adjusted >= b.p_value and c.p_adjusted >= c.p_value
    assert max(b.p_adjusted, c.p_adjusted) == pytest.approx(min(1.0, max(b.p_value, c.p_value)))
    assert analysis.decision == SHIP and analysis.reasons[0] == "ship c"


def test_a_broken_guardrail_stops_a_variant_that_wins_on_the_primary_metric():
    """The challenger clicks more but converts far less: the conversion guardrail stops it."""
    traffic = synthetic_traffic(TWO_ARMS, 8000, DAYS, seed=5, lifts={"challenger": 1.3})
    d = traffic.days
    converted = d.totals["conversion"].copy()
    converted[d.arm == 1] = 0  # the challenger's clicks never convert
    broken = UserDays(d.user, d.arm, d.day, d.impressions, {**d.totals, "conversion": converted}, d.n_users, d.pre)
    analysis = read_out(TWO_ARMS, type(traffic)(broken, traffic.arms, traffic.user_ids), [("conversion", 0.05)])
    assert analysis.decision == STOP
    assert any("breaks the conversion guardrail" in r for r in analysis.reasons)


def test_no_difference_keeps_running_until_the_end_then_stops():
    traffic = synthetic_traffic(TWO_ARMS, 1500, 5, seed=2)
    assert read_out(TWO_ARMS, traffic).decision == KEEP_RUNNING
    ended = read_out(TWO_ARMS, traffic, ended=True)
    assert ended.decision == STOP and "ended without a significant win" in ended.reasons[0]


def test_the_always_valid_p_value_never_rises_between_looks():
    analysis = read_out(TWO_ARMS, synthetic_traffic(TWO_ARMS, 3000, DAYS, seed=4, lifts={"challenger": 1.1}))
    looks = analysis.comparison("challenger", "ctr").p_by_look
    assert len(looks) == DAYS and all(b <= a for a, b in zip(looks, looks[1:], strict=False))


def test_msprt_p_is_one_at_no_difference_and_falls_with_it():
    assert msprt_p(0.0, 1e-4, 1e-4) == 1.0
    assert msprt_p(0.05, 1e-4, 1e-4) < msprt_p(0.02, 1e-4, 1e-4) < 1.0
