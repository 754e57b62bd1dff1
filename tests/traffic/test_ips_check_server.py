"""Issue 16's off-policy check through the live server: serving's own exploration around a publication
of list A, each shown item's propensity read back from serving's impression log, B then published and
served as ranked to the online run (pipelines/traffic/ips_check.py, server_ips_check).

Serving's exploration is seeded from traffic_seed, so each seed's result repeats. Measured over seeds
0-7: the online interval covered the IPS estimate and the IPS interval the online CTR in 8 of 8, the
logging CTR (no weights) in none.
"""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.traffic.ips_check import logged_propensities, server_ips_check
from serving.impressions.format import PROPENSITIES, landing_dir, sealed_name
from tests.conftest import make_settings

SEEDS = range(4)
EPSILON, KEEP = 0.4, 3


def settings_for(home, seed):
    return make_settings(
        home, sim_users=300, sim_items=15, sim_categories=6, traffic_seed=seed, traffic_k=5, traffic_visit_rate=8.0,
        ope_clip=1e6,
    )  # fmt: skip


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("ips-server")
    return [server_ips_check(settings_for(root / f"home{seed}", seed), EPSILON, KEEP, 0.1) for seed in SEEDS]


def test_the_online_interval_covers_the_estimate_from_the_servers_exploration_log(results):
    assert sum(check.covered for check in results) >= len(results) - 1, [check.summary() for check in results]
    assert sum(check.ips.covers(check.online.value) for check in results) >= len(results) - 1


def test_the_unweighted_logging_ctr_is_not_what_the_target_gets(results):
    assert all(check.online.value > check.naive for check in results)
    assert sum(check.online.covers(check.naive) for check in results) <= 1, [check.summary() for check in results]
    assert not any(check.ips.covers(check.naive) for check in results)


def test_the_propensities_read_back_are_the_servers_closed_form(tmp_path):
    settings = settings_for(tmp_path / "home", 0).model_copy(update={"traffic_visit_rate": 1.0})
    server_ips_check(settings, EPSILON, KEEP, 1.0)
    (path,) = sorted(landing_dir(settings.home).glob("date=*/*.parquet"))
    table = pq.read_table(path).to_pydict()
    values = {round(p, 9) for slate in table[PROPENSITIES] for p in slate}
    pool = 15 - 5  # the catalog less the slate
    assert values == {round(1 - EPSILON, 9), round(EPSILON / pool, 9)}


def write_log(home, request_id, items, propensities):
    directory = landing_dir(home) / "date=2026-12-04"
    directory.mkdir(parents=True)
    pq.write_table(
        pa.table({"request_id": [request_id], "item_ids": [items], PROPENSITIES: [propensities]}),
        directory / sealed_name(1_796_342_400, "p"),  # a sealed file's name (2026-12-04T00:00Z)
    )


def test_a_shown_item_the_log_does_not_hold_is_refused_naming_the_request(tmp_path):
    with pytest.raises(ValueError, match="no impression files"):
        logged_propensities(tmp_path, np.array(["r1"]), np.array([1]), np.array(["i1"], dtype=object))
    write_log(tmp_path, "r1", ["i1", "i2"], [0.6, 0.04])
    found = logged_propensities(
        tmp_path, np.array(["r1", "r1"]), np.array([1, 2]), np.array(["i1", "i2"], dtype=object)
    )
    assert found.tolist() == [0.6, 0.04]
    with pytest.raises(ValueError, match="request r1 position 2 showed i9, the log has i2 with propensity 0.04"):
        logged_propensities(tmp_path, np.array(["r1"]), np.array([2]), np.array(["i9"], dtype=object))
    with pytest.raises(ValueError, match="request r2 position 1 showed i1, the log has nothing"):
        logged_propensities(tmp_path, np.array(["r2"]), np.array([1]), np.array(["i1"], dtype=object))
