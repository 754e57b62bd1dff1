"""The experiment readout over the warehouse: DuckDB aggregates the slate items per user and day, numpy
and scipy (stats.py) do the statistics, and the result is written as reports/experiments/<name>.json
and .html (linked from reports/index.html). `recforge experiments readout` and the daily
recforge_experiment_readout DAG both call `run_readout`.

The SQL never moves impressions into Python: 10 million slate items become one row per user and day.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from pipelines.experiments.contract import METRICS, PRE_PERIOD_RELATION, SLATE_ITEM_COLUMNS, SLATE_ITEMS_RELATION
from pipelines.experiments.declaration import Experiment, get_experiment
from pipelines.experiments.stats import Analysis, UserDays, analyse
from pipelines.settings import Settings


class ReadoutBlocked(RuntimeError):
    """The sample-ratio-mismatch check failed: the readout's effects are withheld (the report says why)."""


@dataclass
class Readout:
    experiment: str
    as_of: datetime
    analysis: Analysis
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def decision(self) -> str:
        return self.analysis.decision

    def summary(self) -> str:
        arms = ", ".join(f"{a.arm} {a.users} users / {a.impressions} impressions" for a in self.analysis.arms)
        return (
            f"experiment {self.experiment} read out at {self.as_of:%Y-%m-%d %H:%M} UTC over "
            f"{self.analysis.looks} daily looks ({arms}) in {self.seconds:.1f}s: {self.decision.upper()} - "
            + "; ".join(self.analysis.reasons)
        )

    def to_json(self) -> dict:
        return {
            "experiment": self.experiment,
            "as_of": self.as_of.isoformat(),
            "decision": self.decision,
            "reasons": self.analysis.reasons,
            "blocked": self.analysis.blocked,
            "notes": self.notes,
            "srm": asdict(self.analysis.srm),
            "arms": [asdict(a) for a in self.analysis.arms],
            "comparisons": [asdict(c) for c in self.analysis.comparisons],
            "looks": self.analysis.looks,
            "excluded_users": self.analysis.excluded_users,
        }


def user_days_sql(relation: str = SLATE_ITEMS_RELATION, pre_relation: str | None = PRE_PERIOD_RELATION) -> str:
    """Per user, arm and day: impressions, the sums of every metric's column (contract names only), the
    first impression (epoch seconds) and the user's pre-period events (CUPED's covariate; 0 without one).

    Users come back as codes 0..n-1 and arms as positions in the arms list, so no string crosses into
    Python. Parameters: experiment, start, end (exclusive), the arms (a list) twice, the start in epoch
    seconds (the day origin), and with a pre-period relation its window [from, to).
    """
    columns = set(SLATE_ITEM_COLUMNS)
    needed = {"user_id", "experiment", "variant", "event_ts", *METRICS.values()}
    assert needed <= columns, f"contract lacks {needed - columns}"
    sums = ",\n            ".join(f"sum(cast({column} as double)) as {metric}" for metric, column in METRICS.items())
    pre_cte = (
        f"""pre as (
        select user_id, count(*) as pre from {pre_relation} where event_ts >= ? and event_ts < ? group by user_id
    ),"""
        if pre_relation
        else "pre as (select null::varchar as user_id, 0 as pre where false),"
    )
    return f"""
    with slate as (
        select user_id, variant, event_ts, {", ".join(METRICS.values())}
        from {relation}
        where experiment = ? and event_ts >= ? and event_ts < ? and list_contains(?, variant)
    ),
    per_user_day as (
        select
            user_id,
            list_position(?, variant) - 1 as arm,
            cast(floor((epoch(event_ts) - ?) / 86400) as integer) as day,
            count(*) as impressions,
            {sums},
            epoch(min(event_ts)) as first_epoch
        from slate
        group by all
    ),
    users as (
        select user_id, row_number() over (order by user_id) - 1 as user_code
        from (select distinct user_id from per_user_day)
    ),
    {pre_cte}
    final as (
        select users.user_code, p.arm, p.day, p.impressions, {", ".join(f"p.{m}" for m in METRICS)}, p.first_epoch,
               coalesce(pre.pre, 0) as pre
        from per_user_day as p
        inner join users using (user_id)
        left join pre using (user_id)
    )
    select * from final
    """


def unknown_variants_sql(relation: str = SLATE_ITEMS_RELATION) -> str:
    return (
        f"select variant, count(*) from {relation} where experiment = ? and event_ts >= ? and event_ts < ? "
        "and not list_contains(?, coalesce(variant, '')) group by variant order by 2 desc"
    )


def _relation_exists(con, relation: str) -> bool:
    schema, _, table = relation.rpartition(".")
    return bool(
        con.execute(
            "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
            [schema or "main", table],
        ).fetchone()[0]
    )


def compute_readout(
    con,
    experiment: Experiment,
    settings: Settings,
    as_of: datetime,
    relation: str = SLATE_ITEMS_RELATION,
    pre_relation: str | None = PRE_PERIOD_RELATION,
) -> Readout:
    """Read the experiment from `relation` (slate-item grain) on the DuckDB connection `con`, up to `as_of`."""
    began = time.perf_counter()
    if not _relation_exists(con, relation):
        raise LookupError(
            f"{relation} does not exist: the impressions mart has not been built yet (recforge transform)"
        )
    end = min(as_of, experiment.end)
    arms = list(experiment.arms)
    params = [experiment.name, experiment.start, end, arms]
    notes = []
    cuped = settings.experiment_cuped_days > 0 and pre_relation is not None
    if cuped and not _relation_exists(con, pre_relation):
        notes.append(f"no CUPED: {pre_relation} does not exist")
        cuped = False
    window = [experiment.start - timedelta(days=settings.experiment_cuped_days), experiment.start] if cuped else []
    sql = user_days_sql(relation, pre_relation if cuped else None)
    rows = con.execute(sql, [*params, arms, experiment.start.timestamp(), *window]).fetchnumpy()
    unknown = con.execute(unknown_variants_sql(relation), params).fetchall()
    shadow = {v.name for v in experiment.shadow}
    strays = [(v, n) for v, n in unknown if v not in shadow]
    if strays:
        notes.append("impressions under undeclared variants left out: " + ", ".join(f"{v} ({n})" for v, n in strays))
    user = np.asarray(rows["user_code"], dtype=np.int64)
    n_users = int(user.max()) + 1 if len(user) else 0
    pre = None
    if cuped and len(user):
        pre = np.zeros(n_users)
        pre[user] = np.asarray(rows["pre"], dtype=float)
        notes.append(f"CUPED on each user's events in the {settings.experiment_cuped_days} days before the start")
    days = UserDays(
        user=user,
        arm=np.asarray(rows["arm"], dtype=np.int64),
        day=np.asarray(rows["day"], dtype=np.int64),
        impressions=np.asarray(rows["impressions"], dtype=float),
        totals={m: np.asarray(rows[m], dtype=float) for m in METRICS},
        n_users=n_users,
        pre=pre,
    )
    expected = _expected_shares(experiment, user, np.asarray(rows["first_epoch"], dtype=float), n_users)
    reference, challengers = (
        (experiment.control, [v.name for v in experiment.variants[1:]])
        if len(experiment.variants) > 1
        else (arms[-1], [experiment.control])  # one variant against the holdback
    )
    analysis = analyse(
        days, arms, expected, reference, challengers, list(METRICS), experiment.primary_metric,
        [(g.metric, g.max_drop) for g in experiment.guardrails],
        alpha=settings.experiment_alpha, srm_alpha=settings.experiment_srm_alpha,
        msprt_tau=settings.experiment_msprt_tau, ended=as_of >= experiment.end,
    )  # fmt: skip
    if analysis.excluded_users:
        notes.append(f"{analysis.excluded_users} users seen in more than one arm (a canary ramp) left out")
    return Readout(experiment.name, as_of, analysis, notes, time.perf_counter() - began)


def _expected_shares(experiment: Experiment, user: np.ndarray, first_epoch: np.ndarray, n_users: int) -> dict:
    """Declared shares; with a canary, the shares in force at each user's first impression, summed."""
    if experiment.canary is None or not len(user):
        return dict(experiment.shares_at())
    first = np.full(n_users, np.inf)
    np.minimum.at(first, user, first_epoch)
    moments = sorted({experiment.start, *(s.at for s in experiment.canary.schedule)})
    segment = np.searchsorted(np.array([m.timestamp() for m in moments]), first, side="right") - 1
    totals: dict[str, float] = dict.fromkeys(experiment.arms, 0.0)
    for index, count in zip(*np.unique(segment, return_counts=True), strict=True):
        for arm, share in experiment.shares_at(moments[max(int(index), 0)]):
            totals[arm] += share * int(count)
    return totals


def report_paths(settings: Settings, name: str):
    folder = settings.reports_dir / "experiments"
    return folder / f"{name}.json", folder / f"{name}.html"


def last_decision(settings: Settings, name: str) -> str | None:
    record, _ = report_paths(settings, name)
    if not record.exists():
        return None
    try:
        data = json.loads(record.read_text())
        return f"{data['decision']} ({data['as_of'][:16].replace('T', ' ')} UTC)"
    except (OSError, ValueError, KeyError):
        return "unreadable record"


def _plain(value):
    """JSON has no NaN or infinity: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def run_readout(settings: Settings, name: str, as_of: datetime | None = None) -> tuple[Readout, object]:
    """Read out one declared experiment from the warehouse, tag the decision on the variants' model
    versions in MLflow, write its JSON record and HTML page, rewrite the reports index; raise
    ReadoutBlocked (after writing the page) when the SRM check fails."""
    from pipelines.experiments.registry_tags import tag_decision
    from pipelines.warehouse.connection import connect

    experiment = get_experiment(settings, name)
    if settings.dbt_target != "duckdb":
        raise NotImplementedError("the experiment readout reads the DuckDB warehouse (RECFORGE_DBT_TARGET=duckdb)")
    as_of = as_of or datetime.now(UTC)
    with connect(settings, must_exist=True) as warehouse:
        readout = compute_readout(warehouse.con, experiment, settings, as_of)
    if readout.analysis.blocked:  # broken assignment says nothing about the models: leave them untagged
        readout.notes.append("decision not tagged in MLflow: the readout is blocked")
    else:
        readout.notes += tag_decision(settings, experiment, readout)
    page = write_readout(settings, experiment, readout)
    if readout.analysis.blocked:
        raise ReadoutBlocked(f"{readout.analysis.reasons[0]} (report: {page})")
    return readout, page


def write_readout(settings: Settings, experiment: Experiment, readout: Readout):
    from pipelines.reports.experiment_report import write_experiment_report

    record, _ = report_paths(settings, experiment.name)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(_plain(readout.to_json()), indent=2, default=str) + "\n")
    return write_experiment_report(settings, experiment, readout)
