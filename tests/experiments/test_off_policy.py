"""Off-policy estimators on a seeded synthetic logging world whose click probabilities are known, so the
target policy's true CTR is computed exactly and each estimator's CI is checked against it."""

import numpy as np
import pytest

from pipelines.experiments.off_policy import (
    LoggedSlates,
    OffPolicyInputError,
    evaluate,
    format_estimates,
    pick,
)

N_USERS, N_ITEMS, K, EPS = 300, 12, 3, 0.3
POS_BIAS = np.array([1.0, 0.7, 0.5])


def world(seed: int, n_requests: int = 6000):
    """Users x items attractiveness, an epsilon-greedy logging policy per position, a different target."""
    rng = np.random.default_rng(seed)
    attr = rng.beta(1.0, 6.0, size=(N_USERS, N_ITEMS))
    log_rank = np.argsort(-(attr + rng.normal(0, 0.3, attr.shape)), axis=1)[:, :K]  # noisy logging model
    tgt_rank = np.argsort(-(attr + rng.normal(0, 0.05, attr.shape)), axis=1)[:, :K]  # better challenger
    users = rng.integers(0, N_USERS, n_requests)
    greedy = log_rank[users]  # (n, K)
    explore = rng.random((n_requests, K)) < EPS
    shown = np.where(explore, rng.integers(0, N_ITEMS, (n_requests, K)), greedy)
    prop = (1 - EPS) * (shown == greedy) + EPS / N_ITEMS
    p_click = attr[users[:, None], shown] * POS_BIAS
    clicked = (rng.random((n_requests, K)) < p_click).astype(int)
    logs = LoggedSlates(
        cluster=np.repeat(users, K),
        position=np.tile(np.arange(1, K + 1), n_requests),
        item=shown.ravel(),
        propensity=prop.ravel(),
        clicked=clicked.ravel(),
    )
    target_item = tgt_rank[users].ravel()
    # Exact target CTR: users are drawn uniformly, so the expectation is the mean over all users.
    true_per_pos = (attr[np.arange(N_USERS)[:, None], tgt_rank] * POS_BIAS).mean(axis=0)
    true_model = {(i, k + 1): float(attr[:, i].mean() * POS_BIAS[k]) for i in range(N_ITEMS) for k in range(K)}
    return logs, target_item, true_per_pos, true_model, attr, users


def test_estimators_cover_the_true_target_ctr_over_seeds():
    hits = {"ips": 0, "snips": 0, "dr": 0}
    seeds = range(30)
    for seed in seeds:
        logs, target_item, true_per_pos, _, _, _ = world(seed)
        est = evaluate(logs, target_item=target_item, clip=1e6)
        truth = float(true_per_pos.mean())  # every slate has all K positions: pooled = mean over positions
        for name in hits:
            hits[name] += pick(est, name).covers(truth)
    for name, h in hits.items():
        assert h / len(seeds) >= 0.8, (name, h)


def test_ips_ci_covers_true_ctr_and_target_differs_from_logging():
    logs, target_item, true_per_pos, _, _, _ = world(7, n_requests=20000)
    est = evaluate(logs, target_item=target_item, clip=1e6)
    ips = pick(est, "ips")
    assert ips.covers(float(true_per_pos.mean()))
    for k in range(1, K + 1):
        assert pick(est, "ips", k).covers(float(true_per_pos[k - 1]))
    logged_ctr = float(np.mean(logs.clicked))
    assert abs(logged_ctr - true_per_pos.mean()) > 3 * ips.se  # the challenger really is different
    assert 0 < ips.ess < len(logs.clicked)
    assert "ips" in format_estimates(est)


def test_dr_with_a_good_reward_model_has_lower_variance_than_ips():
    """Clicks are Bernoulli, so most of IPS's variance is click noise DR cannot remove; a good reward
    model removes the rest (the weighted squared CTR), a modest but systematic gain."""
    for seed in range(5):
        logs, target_item, true_per_pos, true_model, attr, _ = world(seed)
        cl, pos = np.asarray(logs.cluster), np.asarray(logs.position)
        per_row = evaluate(
            logs,
            target_item=target_item,
            reward_logged=attr[cl, logs.item] * POS_BIAS[pos - 1],  # the true per-user model
            target_dm=attr[cl, target_item] * POS_BIAS[pos - 1],
            clip=1e6,
        )
        item_pos = evaluate(logs, target_item=target_item, reward_model=true_model, clip=1e6)
        ips_se = pick(per_row, "ips").se
        assert pick(per_row, "dr").se < 0.95 * ips_se, seed
        assert pick(item_pos, "dr").se < ips_se, seed
        assert pick(per_row, "dr").covers(float(true_per_pos.mean())), seed


def test_dr_stays_unbiased_with_a_bad_reward_model():
    logs, target_item, true_per_pos, true_model, _, _ = world(2)
    bad = {key: 0.9 for key in true_model}
    est = evaluate(logs, target_item=target_item, reward_model=bad, clip=1e6)
    assert pick(est, "dr").covers(float(true_per_pos.mean()))
    with pytest.raises(OffPolicyInputError, match="reward_logged needs target_dm"):
        evaluate(logs, target_item=target_item, reward_logged=np.zeros(len(target_item)))


def test_clipping_lowers_the_weights_and_raises_the_effective_sample_size():
    logs, target_item, _, _, _, _ = world(11)
    free = evaluate(logs, target_item=target_item, clip=1e6)
    big = evaluate(logs, target_item=target_item, clip=1e5)
    tight = evaluate(logs, target_item=target_item, clip=2.0)
    assert pick(free, "ips").value == pick(big, "ips").value
    assert pick(free, "ips").clipped_share == 0
    assert pick(tight, "ips").clipped_share > 0
    assert pick(tight, "ips").value < pick(free, "ips").value  # clipping biases down
    assert pick(tight, "ips").ess > pick(free, "ips").ess
    assert pick(tight, "ips").se < pick(free, "ips").se
    with pytest.raises(OffPolicyInputError, match="clip"):
        evaluate(logs, target_item=target_item, clip=0.5)


def _small():
    return dict(
        cluster=np.array([1, 1, 2, 2]),
        position=np.array([1, 2, 1, 2]),
        item=np.array([5, 6, 5, 7]),
        propensity=np.array([0.5, 0.5, 0.5, 0.5]),
        clicked=np.array([1, 0, 0, 1]),
    )


@pytest.mark.parametrize(
    ("column", "value", "match"),
    [
        ("propensity", 0.0, r"'propensity' must be in \(0, 1\], row 2"),
        ("propensity", 1.5, r"'propensity' must be in \(0, 1\], row 2"),
        ("propensity", np.nan, r"'propensity' is missing at row 2"),
        ("clicked", 3, r"'clicked' must be 0 or 1, row 2"),
        ("position", 0, r"'position' must be >= 1.*row 2"),
    ],
)
def test_bad_rows_name_the_column_and_row(column, value, match):
    cols = _small()
    cols[column] = cols[column].astype(float) if column == "propensity" else cols[column]
    cols[column][2] = value
    with pytest.raises(OffPolicyInputError, match=match):
        evaluate(LoggedSlates(**cols), target_item=np.array([5, 6, 5, 6]))


def test_bad_target_and_shape_errors():
    logs = LoggedSlates(**_small())
    with pytest.raises(OffPolicyInputError, match=r"'target_prob' must be in \[0, 1\], row 1"):
        evaluate(logs, target_prob=np.array([0.5, 1.2, 0.5, 0.5]))
    with pytest.raises(OffPolicyInputError, match="exactly one"):
        evaluate(logs)
    with pytest.raises(OffPolicyInputError, match="'target_item' has 3 rows"):
        evaluate(logs, target_item=np.array([5, 6, 5]))
    cols = _small()
    cols["clicked"] = cols["clicked"][:3]
    with pytest.raises(OffPolicyInputError, match="'clicked' has 3 rows"):
        evaluate(LoggedSlates(**cols), target_item=np.array([5, 6, 5, 6]))


def test_stochastic_target_without_dm_gives_ips_and_snips_only():
    logs = LoggedSlates(**_small())
    est = evaluate(logs, target_prob=np.array([0.5, 0.5, 0.5, 0.5]))
    assert {e.estimator for e in est} == {"ips", "snips"}
    assert pick(est, "ips").value == pytest.approx(0.5)  # weight 1 everywhere: the logged CTR
    assert pick(est, "snips").value == pytest.approx(0.5)


def _log_to_warehouse(settings, logs, target_item, drop_propensity_at=None):
    """The synthetic logs as an experiment's shown slates (variant control, with propensities) in
    raw.impression_items and marts.slate_items, and the target as the shadow variant's slates."""
    import pandas as pd

    from pipelines.experiments.contract import SLATE_ITEM_COLUMNS, SLATE_ITEMS_RELATION
    from pipelines.warehouse.connection import connect

    n = len(logs.clicked)
    request = np.arange(n) // K
    prop = np.asarray(logs.propensity, dtype=float).copy()
    if drop_propensity_at is not None:
        prop[drop_propensity_at] = np.nan
    base = dict(
        request_id=[f"r{r}" for r in request], user_id=[f"u{u}" for u in logs.cluster], experiment="home-ab",
        position=logs.position, served_at=pd.Timestamp("2026-12-02", tz="UTC"),
    )  # fmt: skip
    shown = pd.DataFrame({**base, "variant": "control", "item_id": [f"i{i}" for i in logs.item], "propensity": prop})
    shadow = pd.DataFrame({**base, "variant": "shadowed", "item_id": [f"i{i}" for i in target_item], "propensity": 1.0})
    slate = shown.assign(clicked=np.asarray(logs.clicked, dtype=bool), converted=False, revenue=0.0,
                         event_ts=shown.served_at)  # fmt: skip
    with connect(settings) as warehouse:
        con = warehouse.con
        for frame, is_shadow in ((shown, False), (shadow, True)):
            con.register("f", frame)
            con.execute(
                "insert into raw.impression_items select request_id, served_at, 'recommendations', user_id, null, "
                "false, 'v1', experiment, variant, 3, position, item_id, 0.0, propensity, 'b1', date '2026-12-02', "
                f"served_at, {is_shadow} from f"
            )
            con.unregister("f")
        con.register("slate", slate)
        select = ", ".join(f"cast({c} as {t}) as {c}" for c, t in SLATE_ITEM_COLUMNS.items())
        con.execute("create schema if not exists marts")
        con.execute(f"create or replace table {SLATE_ITEMS_RELATION} as select {select} from slate")


def test_the_warehouse_estimate_equals_the_direct_one_and_the_cli_prints_it(settings, monkeypatch, capsys):
    from pipelines.cli import main
    from pipelines.experiments.off_policy import evaluate_experiment
    from pipelines.warehouse.connection import connect

    logs, target_item, true_per_pos, _, _, _ = world(4, n_requests=2000)
    _log_to_warehouse(settings, logs, target_item)
    direct = evaluate(logs, target_item=target_item, clip=settings.ope_clip)
    with connect(settings, must_exist=True) as warehouse:
        got = evaluate_experiment(warehouse.con, "home-ab", "shadowed", clip=settings.ope_clip)
    for name in ("ips", "snips", "dr"):
        assert pick(got, name).value == pytest.approx(pick(direct, name).value, rel=1e-9)
        assert pick(got, name).se == pytest.approx(pick(direct, name).se, rel=1e-9)
    monkeypatch.setenv("RECFORGE_HOME", str(settings.home))
    assert main(["experiments", "off-policy", "home-ab", "--target", "shadowed"]) == 0
    out = capsys.readouterr().out
    assert "off-policy CTR of 'shadowed' in 'home-ab'" in out and "dr" in out
    with connect(settings, must_exist=True) as warehouse, pytest.raises(OffPolicyInputError, match="no shown slates"):
        evaluate_experiment(warehouse.con, "home-ab", "nobody", clip=10)


def test_a_slate_logged_without_propensity_is_named_by_request(settings):
    from pipelines.experiments.off_policy import evaluate_experiment
    from pipelines.warehouse.connection import connect

    logs, target_item, _, _, _, _ = world(4, n_requests=50)
    _log_to_warehouse(settings, logs, target_item, drop_propensity_at=7)
    with connect(settings, must_exist=True) as warehouse:
        with pytest.raises(OffPolicyInputError, match=r"'propensity' is missing .* request 'r2' position 2"):
            evaluate_experiment(warehouse.con, "home-ab", "shadowed", clip=10)
