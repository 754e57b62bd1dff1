"""Issue 16's off-policy check in the simulator: the IPS estimate of a variant's CTR from exploration
logs falls within the confidence interval of the CTR measured online for the same variant.

Both policies are computed in the simulator (pipelines/traffic/ips_check.py); the click model is the
traffic simulator's. Over seeds, the online interval covers the IPS value, and the IPS interval the
online CTR, about as often as a 95% interval should (less, by the other side's own noise; measured 7 of
8 both ways); the logging policy's own CTR, the estimate one would make without weighting, is rarely
covered (1 of 8 by the online interval, none by the IPS one): the check tells a right estimate from a
wrong one.
"""

import pytest

from pipelines.traffic.ips_check import simulated_ips_check
from tests.conftest import make_settings

SEEDS = range(8)
EPSILON, KEEP = 0.4, 3


def checks(tmp_path):
    results = []
    for seed in SEEDS:
        settings = make_settings(
            tmp_path / f"home{seed}", sim_users=300, sim_items=15, sim_categories=6, traffic_seed=seed,
            traffic_k=5, traffic_visit_rate=8.0, ope_clip=1e6,
        )  # fmt: skip
        results.append(simulated_ips_check(settings, EPSILON, keep=KEEP, online_visit_share=0.1))
    return results


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return checks(tmp_path_factory.mktemp("ips"))


def test_the_online_ctr_interval_covers_the_ips_estimate_over_seeds(results):
    covered = sum(check.covered for check in results)
    assert covered >= 0.75 * len(results), [check.summary() for check in results]


def test_the_ips_interval_covers_the_online_ctr_over_seeds(results):
    covered = sum(check.ips.covers(check.online.value) for check in results)
    assert covered >= 0.75 * len(results), [check.summary() for check in results]


def test_without_importance_weights_the_logging_ctr_is_not_covered(results):
    # The target is a better list than the one logged: its CTR is clearly above the logging run's.
    assert all(check.online.value > check.naive for check in results)
    naive_covered = sum(check.online.covers(check.naive) for check in results)
    assert naive_covered <= 0.25 * len(results), [check.summary() for check in results]
    assert not any(check.ips.covers(check.naive) for check in results)  # the IPS interval excludes it too


def test_a_clip_below_the_weights_biases_the_estimate_down(tmp_path):
    settings = make_settings(
        tmp_path / "home", sim_users=300, sim_items=15, sim_categories=6, traffic_seed=0, traffic_k=5,
        traffic_visit_rate=8.0,
    )  # fmt: skip
    unclipped = simulated_ips_check(settings.model_copy(update={"ope_clip": 1e6}), EPSILON, keep=KEEP)
    clipped = simulated_ips_check(settings.model_copy(update={"ope_clip": 2.0}), EPSILON, keep=KEEP)
    assert clipped.ips.clipped_share > 0 and clipped.ips.value < unclipped.ips.value


def test_a_target_slot_the_exploration_cannot_reach_is_refused(tmp_path):
    settings = make_settings(tmp_path / "home", sim_users=20, sim_items=15, traffic_k=5)
    with pytest.raises(ValueError, match="keep must be in"):
        simulated_ips_check(settings, EPSILON, keep=6)
