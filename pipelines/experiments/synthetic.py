"""Seeded synthetic experiment traffic: the calibration tests, the readout benchmark and the docs' example
run the readout on it, knowing the truth (the lift each arm was given, a skew of the assignment).

Users are assigned by the real assignment (serving.experiments via Experiment.assign); each has an
activity rate (gamma) that drives both their pre-period events and their impressions, and a click
propensity (beta) that the arm's lift multiplies. Per user and day: impressions (Poisson), clicks
(binomial), conversions among clicks (binomial) and revenue per conversion (gamma).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.experiments.contract import METRICS
from pipelines.experiments.declaration import Experiment
from pipelines.experiments.stats import UserDays


@dataclass(frozen=True)
class Traffic:
    """Per (user, arm, day) sums with users' ids and the arm names (UserDays plus what a table needs)."""

    days: UserDays
    arms: list[str]
    user_ids: list[str]


def synthetic_traffic(
    experiment: Experiment,
    n_users: int,
    n_days: int,
    seed: int,
    lifts: dict[str, float] | None = None,
    skew: dict[str, float] | None = None,
    impressions_per_day: float = 3.0,
    base_ctr: float = 0.05,
    conversion_per_click: float = 0.1,
    user_prefix: str = "u",
) -> Traffic:
    """`lifts`: arm -> multiplicative CTR lift (1.0: none); `skew`: arm -> share of its users whose
    impressions are lost (a broken logger or redirect), which the SRM check must catch."""
    rng = np.random.default_rng(seed)
    arms = list(experiment.arms)
    code = {a: i for i, a in enumerate(arms)}
    user_ids = [f"{user_prefix}{seed}_{i}" for i in range(n_users)]
    arm_of_user = np.array([code[experiment.assign(u)] for u in user_ids])
    keep = np.ones(n_users, dtype=bool)
    for arm, lost in (skew or {}).items():
        members = np.flatnonzero(arm_of_user == code[arm])
        keep[rng.choice(members, size=int(round(lost * len(members))), replace=False)] = False

    activity = rng.gamma(shape=1.5, scale=1 / 1.5, size=n_users)  # mean 1, heavy-ish tail
    propensity = rng.beta(2, 2 / base_ctr - 2, size=n_users)  # mean base_ctr
    lift = np.array([(lifts or {}).get(a, 1.0) for a in arms])[arm_of_user]
    first_day = rng.integers(0, n_days, size=n_users)
    # pre-period events: the same activity and taste for clicking drive them (what CUPED exploits)
    pre = rng.poisson(activity * propensity / base_ctr * 30).astype(float)

    user = np.repeat(np.arange(n_users), n_days)
    day = np.tile(np.arange(n_days), n_users)
    active = (day >= first_day[user]) & keep[user]
    user, day = user[active], day[active]
    impressions = rng.poisson(activity[user] * impressions_per_day)
    seen = impressions > 0
    user, day, impressions = user[seen], day[seen], impressions[seen]
    clicks = rng.binomial(impressions, np.clip(propensity[user] * lift[user], 0, 1))
    conversions = rng.binomial(clicks, conversion_per_click)
    revenue = np.where(conversions > 0, rng.gamma(2.0, 15.0, size=len(user)) * conversions, 0.0)
    totals = dict(zip(METRICS, (clicks.astype(float), conversions.astype(float), revenue), strict=True))
    days = UserDays(user, arm_of_user[user], day, impressions.astype(float), totals, n_users, pre)
    return Traffic(days, arms, user_ids)


def slate_item_rows(traffic: Traffic, experiment: str, start, slate_size: int = 10):
    """The traffic as slate-item rows (an Arrow table of contract.SLATE_ITEM_COLUMNS): one row per
    impression, slates of `slate_size` per request, clicks and conversions on a user-day's first rows."""
    import pyarrow as pa

    d = traffic.days
    rows = d.impressions.astype(np.int64)
    group = np.repeat(np.arange(len(rows)), rows)
    offset = np.arange(len(group)) - np.repeat(np.cumsum(rows) - rows, rows)
    clicked = offset < np.repeat(d.totals["ctr"].astype(np.int64), rows)
    converted = offset < np.repeat(d.totals["conversion"].astype(np.int64), rows)
    per_conversion = np.divide(
        d.totals["revenue_per_impression"], d.totals["conversion"], out=np.zeros(len(rows)),
        where=d.totals["conversion"] > 0,
    )  # fmt: skip
    revenue = np.where(converted, np.repeat(per_conversion, rows), 0.0)
    ts = np.datetime64(start.replace(tzinfo=None), "us") + (
        np.repeat(d.day, rows) * 86_400_000_000 + (offset // slate_size) * 60_000_000 + 3_600_000_000
    ).astype("timedelta64[us]")
    users = np.array(traffic.user_ids, dtype=object)
    arms = np.array(traffic.arms, dtype=object)
    return pa.table(
        {
            "request_id": pa.array(group * 1000 + offset // slate_size).cast(pa.string()),
            "user_id": pa.DictionaryArray.from_arrays(pa.array(d.user[group], pa.int32()), pa.array(users)),
            "experiment": pa.DictionaryArray.from_arrays(
                pa.array(np.zeros(len(group), np.int32)), pa.array([experiment])
            ),
            "variant": pa.DictionaryArray.from_arrays(pa.array(d.arm[group], pa.int32()), pa.array(arms)),
            "item_id": pa.array(offset % 997).cast(pa.string()),
            "position": pa.array((offset % slate_size + 1).astype(np.int32)),
            "clicked": pa.array(clicked),
            "converted": pa.array(converted),
            "revenue": pa.array(revenue),
            "event_ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
        }
    )


def pre_period_rows(traffic: Traffic):
    """(user_id, pre) for CUPED, as an Arrow table."""
    import pyarrow as pa

    return pa.table({"user_id": traffic.user_ids, "pre": traffic.days.pre})
