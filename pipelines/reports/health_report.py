"""reports/health/weekly.html: the weekly page an analyst owning the recommender reads.

Each section is a trend by week against the previous weeks: events in and quarantined by reason
(by landing day), validation results, drift measures, the champion and its offline metrics
(cold-start users included), catalog coverage and intra-list diversity of each kept publication,
serving's fallback share and p99 as the health checks measured them, and serving's failed answers
and fallbacks by reason (its failure log, pipelines/operations/failures.py). Anomalies come first, in
plain words: a metric whose latest week leaves the range of the previous ``report_anomaly_weeks``
by more than ``report_anomaly_tolerance`` of it. Plots are embedded PNGs: the page works offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from models.columns import Columns
from pipelines.operations.failures import failure_log_dir, weekly_failures
from pipelines.operations.health import SERVING_LEVELS
from pipelines.reports import html
from pipelines.reports.index import HEALTH_REPORT, write_index
from pipelines.settings import Settings
from pipelines.warehouse.connection import connect, warehouse_exists


@dataclass(frozen=True)
class Anomaly:
    metric: str
    week: str
    value: float
    low: float
    high: float

    def sentence(self) -> str:
        side = "above" if self.value > self.high else "below"
        return (
            f"{self.metric} in the week of {self.week} was {self.value:.4g}, {side} its range of the "
            f"previous weeks ({self.low:.4g} to {self.high:.4g})."
        )


def anomalies(series: pd.Series, metric: str, settings: Settings) -> list[Anomaly]:
    """The latest week against the range of the `report_anomaly_weeks` before it (needs two of them)."""
    series = series.dropna()
    if len(series) < 3:
        return []
    history = series.iloc[-1 - settings.report_anomaly_weeks : -1]
    low, high, value = float(history.min()), float(history.max()), float(series.iloc[-1])
    slack = settings.report_anomaly_tolerance * max(abs(low), abs(high), high - low)
    if low - slack <= value <= high + slack:
        return []
    return [Anomaly(metric, str(series.index[-1]), value, low, high)]


def by_week(con, sql: str, pivot: tuple[str, str] | None = None, fill_value=None) -> pd.DataFrame:
    """The rows of `sql` (whose column `week` is a date_trunc('week', ...)) indexed by that Monday as
    YYYY-MM-DD; with `pivot` = (column, value), one column per distinct value of `column`."""
    frame = con.execute(sql).fetch_df()
    frame["week"] = pd.to_datetime(frame["week"]).dt.strftime("%Y-%m-%d")
    if pivot is None:
        return frame.set_index("week")
    if frame.empty:
        return pd.DataFrame()
    column, value = pivot
    return frame.pivot_table(index="week", columns=column, values=value, fill_value=fill_value).sort_index()


def weekly_events(con) -> pd.DataFrame:
    frame = by_week(
        con,
        "select date_trunc('week', landing_date) as week, sum(rows_input) as rows_in, "
        "sum(rows_accepted) as accepted, sum(rows_quarantined) as quarantined "
        "from raw.batches where source <> 'impressions' group by 1 order by 1",  # slates are not events
    )
    frame["quarantined_share"] = frame["quarantined"] / frame["rows_in"].where(frame["rows_in"] > 0)
    return frame


def weekly_reasons(con) -> pd.DataFrame:
    sql = "select date_trunc('week', landing_date) as week, reason, count(*) as n from quarantine.events group by 1, 2"
    return by_week(con, sql, pivot=("reason", "n"), fill_value=0)


def weekly_validation(con) -> pd.DataFrame:
    frame = by_week(
        con,
        "select date_trunc('week', validated_at) as week, count(*) as runs, "
        "count(*) filter (where passed) as passed from monitoring.validation_runs group by 1 order by 1",
    )
    frame["pass_rate"] = frame["passed"] / frame["runs"]
    return frame


def latest_drift(con) -> list[list[object]]:
    return [
        list(row)
        for row in con.execute(
            "select measure, method, round(value, 4), threshold, drifted from monitoring.drift_results "
            "where checked_at = (select max(checked_at) from monitoring.drift_results) order by measure"
        ).fetchall()
    ]


def weekly_serving(con) -> pd.DataFrame:
    levels = ", ".join(f"'{level}'" for level in SERVING_LEVELS)
    sql = (
        "select date_trunc('week', checked_at) as week, level, avg(value) as value from monitoring.health_checks "
        f"where value is not null and level in ({levels}) group by 1, 2"
    )
    return by_week(con, sql, pivot=("level", "value"))


def publication_quality(settings: Settings, con, k: int = 10) -> pd.DataFrame:
    """Catalog coverage and intra-list category diversity of the top k of every kept publication."""
    from pipelines.publication.publish import versions
    from serving.format import USER_RECS, read_manifest

    categories = con.execute("select item_id, category from raw.items").fetch_df().set_index("item_id")["category"]
    rows = []
    for version in versions(settings.published_dir):
        directory = settings.published_dir / version
        manifest = read_manifest(directory)
        recs = pd.read_parquet(directory / USER_RECS, columns=[Columns.User, Columns.Item, Columns.Rank])
        top = recs[recs[Columns.Rank] <= k]
        per_user = top.assign(category=top[Columns.Item].map(categories)).groupby(Columns.User)["category"]
        rows.append(
            {
                "version": version,
                "created": manifest["created_at"][:16].replace("T", " "),
                "users": top[Columns.User].nunique(),
                f"coverage@{k}": top[Columns.Item].nunique() / max(len(categories), 1),
                f"category diversity@{k}": float((per_user.nunique() / per_user.size()).mean()) if len(top) else None,
            }
        )
    return pd.DataFrame(rows)


def champion_lines(settings: Settings) -> list[list[object]]:
    from pipelines.training.tracking import CHAMPION, configure, version_by_alias

    client = configure(settings)
    champion = version_by_alias(client, settings.registered_model_name, CHAMPION)
    if champion is None:
        return []
    metrics = client.get_run(champion.run_id).data.metrics
    registered = datetime.fromtimestamp(champion.creation_timestamp / 1000, UTC)
    wanted = (
        "ndcg_at_",
        "recall_at_",
        "coverage_at_",
        "diversity_at_",
        "segment.cold.ndcg_at_",
        "segment.cold.recall_at_",
    )
    shown = [m for m in sorted(metrics) if m.startswith(wanted) and not m.endswith("_std")]
    head = [
        ["model", f"{champion.tags.get('model', '?')} v{champion.version}"],
        ["registered", f"{registered:%Y-%m-%d %H:%M} UTC"],
    ]
    return head + [[name, f"{metrics[name]:.4f}"] for name in shown]


def _plot(frame: pd.DataFrame, title: str, ylabel: str, stacked_bars: bool = False) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3))
    if stacked_bars:  # counts that add up (answers by reason): every week labelled, its total visible
        frame.plot(ax=ax, kind="bar", stacked=True, rot=0)
    else:
        frame.plot(ax=ax, marker="o")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # beside the lines, never over them
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("week")
    ax.grid(alpha=0.3)
    return html.figure_img(fig, title)


def failures_section(failures: pd.DataFrame, settings: Settings) -> str:
    """Serving's failed answers (4xx/5xx) and fallbacks per week by reason, from its failure log."""
    body = "<h2>Failed requests and fallbacks (serving's failure log)</h2>"
    where = html.escape(str(failure_log_dir(settings)))
    if failures.empty:
        return body + f"<p class='none'>No failed request or fallback logged (log: {where}).</p>"
    body += (
        "<p class='sub'>Answers per week by reason: 4xx/5xx answers of the API and fallback answers "
        f"(<code>unknown_user</code>, status 200). Read from {where} and the daily counts the health checks "
        "kept (monitoring.failed_requests).</p>"
    )
    body += _plot(failures, "failed requests and fallbacks by reason", "answers", stacked_bars=True)
    rows = [[week, *[int(v) for v in row], int(row.sum())] for week, row in failures.iterrows()]
    return body + html.table(["week", *failures.columns, "all"], rows)


def write_health_report(settings: Settings) -> Path:
    """Write reports/health/weekly.html from what the warehouse, registry and publications hold now,
    and rewrite reports/index.html, which links it."""

    target = settings.reports_dir / HEALTH_REPORT
    target.parent.mkdir(parents=True, exist_ok=True)
    found: list[Anomaly] = []
    sections = []
    if not warehouse_exists(settings):
        sections.append("<p class='none'>No warehouse yet: run the pipeline first.</p>")
    else:
        with connect(settings) as con:
            events, reasons = weekly_events(con), weekly_reasons(con)
            validation, serving = weekly_validation(con), weekly_serving(con)
            drift, quality = latest_drift(con), publication_quality(settings, con)
            failures = weekly_failures(settings, con)
        found += anomalies(events["accepted"], "accepted events", settings)
        found += anomalies(events["quarantined_share"], "quarantined share", settings)
        for reason in reasons.columns:
            found += anomalies(reasons[reason] / events["rows_in"].reindex(reasons.index), f"{reason} share", settings)
        found += anomalies(validation["pass_rate"], "validation pass rate", settings)
        for level in serving.columns:
            found += anomalies(serving[level], level, settings)
        for reason in failures.columns:
            found += anomalies(failures[reason], f"serving answers logged as {reason}", settings)

        body = "<h2>Events in and quarantined (by landing week)</h2>"
        body += _plot(events[["rows_in", "accepted", "quarantined"]], "events per landing week", "rows")
        if not reasons.empty:
            body += _plot(reasons, "quarantined rows by reason", "rows")
        body += html.table(
            ["week", "rows in", "accepted", "quarantined", "quarantined share"],
            [
                [w, int(r.rows_in), int(r.accepted), int(r.quarantined), f"{r.quarantined_share:.2%}"]
                for w, r in events.iterrows()
            ],
        )
        body += "<h2>Validation</h2>" + html.table(
            ["week", "checkpoint runs", "passed", "pass rate"],
            [[w, int(r.runs), int(r.passed), f"{r.pass_rate:.1%}"] for w, r in validation.iterrows()],
        )
        body += "<h2>Drift (latest check)</h2>"
        body += (
            html.table(["measure", "method", "value", "threshold", "drifted"], drift)
            if drift
            else "<p class='none'>No drift check yet.</p>"
        )
        body += "<h2>Champion and its offline metrics</h2>"
        champion = champion_lines(settings)
        body += html.table(["", ""], champion) if champion else "<p class='none'>No champion yet.</p>"
        body += "<h2>What was published: coverage and diversity</h2>"
        if quality.empty:
            body += "<p class='none'>Nothing published yet.</p>"
        else:
            body += html.table(list(quality.columns), quality.round(4).values.tolist())
            if len(quality) > 1:
                body += _plot(
                    quality.set_index("created").drop(columns=["version", "users"]),
                    "top-10 coverage and diversity per publication",
                    "share",
                )
        body += "<h2>Serving (as the health checks measured it)</h2>"
        if serving.empty:
            body += (
                "<p class='none'>No serving measurement yet: set RECFORGE_SERVING_METRICS_URL for recforge_health.</p>"
            )
        else:
            body += _plot(serving, "serving levels per week", "value")
            body += html.table(
                ["week", *serving.columns], [[w, *[f"{v:.4g}" for v in r]] for w, r in serving.iterrows()]
            )
        body += failures_section(failures, settings)
        body += "<h2>Online experiments</h2><p class='none'>No impressions are logged yet, so there is no "
        body += "click-through rate by variant.</p>"
        sections.append(body)
    if found:
        flagged = "".join(f"<li>{html.escape(a.sentence())}</li>" for a in found)
        head = (
            f"<h2 class='bad'>{len(found)} anomal{'y' if len(found) == 1 else 'ies'} this week</h2><ul>{flagged}</ul>"
        )
    else:
        head = "<h2 class='ok'>No anomaly this week</h2><p>Every weekly metric is within its recent range.</p>"
    rule = (
        f"A metric is flagged when its latest week leaves the range of the previous {settings.report_anomaly_weeks} "
        f"weeks by more than {settings.report_anomaly_tolerance:.0%} of it (RECFORGE_REPORT_ANOMALY_WEEKS, "
        "RECFORGE_REPORT_ANOMALY_TOLERANCE)."
    )
    subtitle = f"written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    target.write_text(
        html.page("recforge weekly health", subtitle, head + f"<p class='sub'>{rule}</p>" + "".join(sections))
    )
    write_index(settings)
    return target
