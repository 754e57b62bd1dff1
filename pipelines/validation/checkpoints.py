"""Run Great Expectations checkpoints and turn their results into a go / no-go.

Three checkpoints guard the pipeline (see expectations/define_suites.py): ``raw_batch`` after
ingest, ``marts`` after dbt, ``publication`` before a publication goes live. A checkpoint is a
list of validation definitions, each applying one suite to one data frame built here.

Every expectation carries a severity. A failed ``critical`` expectation raises
``ValidationFailed`` naming the checkpoint, the failed expectations and the batch, so the Airflow
task fails and nothing downstream runs; failed ``warning`` expectations are logged, shown in Data
Docs and reports/index.html, and the run goes on. Data Docs are updated after every checkpoint,
and their pages load their scripts and styles from copies shipped with recforge (offline_docs.py).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from pipelines.ingest import days_in_interval
from pipelines.runtime.environment import temporary_environment
from pipelines.settings import Settings
from pipelines.validation.docs_templates import cache_templates
from pipelines.validation.offline_docs import localise
from pipelines.warehouse.connection import connect

log = logging.getLogger(__name__)


class ValidationFailed(RuntimeError):
    """A critical expectation failed."""


@dataclass
class ValidationReport:
    checkpoint: str
    batch: str
    rows: dict[str, int] = field(default_factory=dict)
    pages: dict[str, Path] = field(default_factory=dict)  # Data Docs page of each suite's result
    failed_critical: list[str] = field(default_factory=list)
    failed_warning: list[str] = field(default_factory=list)
    data_docs: Path | None = None
    notes: list[str] = field(default_factory=list)  # counts worth seeing beside the verdict (consent)

    @property
    def passed(self) -> bool:
        return not self.failed_critical

    def summary(self) -> str:
        status = "passed" if self.passed else "FAILED"
        rows = ", ".join(f"{name} {n} rows" for name, n in self.rows.items())
        warnings = f"; warnings: {', '.join(self.failed_warning)}" if self.failed_warning else ""
        critical = f"; critical failures: {', '.join(self.failed_critical)}" if self.failed_critical else ""
        notes = "".join(f"; {note}" for note in self.notes)
        return f"checkpoint {self.checkpoint!r} on batch {self.batch!r} ({rows}) {status}{critical}{warnings}{notes}"


def runtime_context(settings: Settings):
    """A GX File Data Context working on a copy of expectations/ under RECFORGE_HOME.

    The committed context is the source of truth; the copy takes GX's runtime writes
    (validation results) so the repository stays clean and can even be read-only.
    """
    import great_expectations as gx

    runtime = settings.home / "gx"
    runtime.mkdir(parents=True, exist_ok=True)
    for folder in ("expectations", "validation_definitions", "checkpoints"):
        shutil.rmtree(runtime / folder, ignore_errors=True)
        shutil.copytree(settings.expectations_dir / folder, runtime / folder)
    shutil.copy2(settings.expectations_dir / "great_expectations.yml", runtime / "great_expectations.yml")
    cache_templates(runtime / "template_cache")
    return gx.get_context(mode="file", context_root_dir=str(runtime))


def gx_environment(settings: Settings) -> dict[str, str]:
    """What great_expectations.yml reads: Data Docs go under this run's RECFORGE_HOME/reports."""
    docs = settings.reports_dir / "data_docs"
    docs.mkdir(parents=True, exist_ok=True)
    return {"RECFORGE_DATA_DOCS_DIR": str(docs) + os.sep, "GX_ANALYTICS_ENABLED": "false"}


def run_checkpoint(
    settings: Settings,
    name: str,
    frames: dict[str, pd.DataFrame],
    batch: str,
    parameters: dict | None = None,
    notes: list[str] = (),
    rows: dict[str, int] | None = None,
) -> ValidationReport:
    """Run checkpoint `name`, feeding each of its validation definitions the frame of the same name.

    `rows` gives the rows a frame stands for where that is not its length (a frame of per-user
    aggregates stands for the table it summarises); they are what the report shows and records."""
    with temporary_environment(gx_environment(settings)):
        report = _run_definitions(settings, name, frames, batch, parameters)
    report.rows.update(rows or {})
    report.notes.extend(notes)
    _record(settings, report)
    if not report.passed:
        log.error(report.summary())
        raise ValidationFailed(report.summary() + f" (Data Docs: {report.data_docs})")
    (log.warning if report.failed_warning else log.info)(report.summary())
    return report


def _run_definitions(
    settings: Settings, name: str, frames: dict[str, pd.DataFrame], batch: str, parameters: dict | None
) -> ValidationReport:
    from great_expectations.core.run_identifier import RunIdentifier

    context = runtime_context(settings)
    checkpoint = context.checkpoints.get(name)
    report = ValidationReport(checkpoint=name, batch=batch)
    run_id = RunIdentifier(run_name=batch, run_time=datetime.now(UTC))
    try:
        for definition in checkpoint.validation_definitions:
            _run_definition(definition, frames, parameters, run_id, report)
    finally:
        release_batches(context)
    # Render only this run's results (and their suites): a full rebuild re-renders every result
    # ever stored, which grows with each daily run. The index page is still rebuilt.
    this_run = [
        key
        for key in context.validation_results_store.list_keys()
        if key.run_id.run_name == run_id.run_name and key.run_id.run_time == run_id.run_time
    ]
    suites = list({key.expectation_suite_identifier for key in this_run})
    built_at = time.time()
    context.build_data_docs(resource_identifiers=[*this_run, *suites])
    report.data_docs = settings.reports_dir / "data_docs" / "index.html"
    localise(report.data_docs.parent, since=built_at)  # CDN assets -> shipped copies: readable offline
    for suite in report.rows:
        # GX names result pages validations/<suite>/<run name>/<run time>/<asset>.html
        pages = sorted((report.data_docs.parent / "validations" / suite / batch).glob("*/*.html"))
        if pages:
            report.pages[suite] = pages[-1]
    return report


def _run_definition(definition, frames: dict[str, pd.DataFrame], parameters: dict | None, run_id, report) -> None:
    """Validate the frame named like `definition`; its failed expectations go into `report` by severity."""
    if definition.name not in frames:
        raise ValueError(f"checkpoint {report.checkpoint!r} needs a frame for {definition.name!r}")
    frame = frames[definition.name]
    report.rows[definition.name] = len(frame)
    result = definition.run(
        batch_parameters={"dataframe": frame}, expectation_parameters=parameters or {}, run_id=run_id
    )
    for outcome in result.results:
        if outcome.success:
            continue
        config = outcome.expectation_config
        subject = config.kwargs.get("column") or config.kwargs.get("column_A") or "table"
        label = f"{definition.name}.{config.type}({subject})"
        severity = str(getattr(config.severity, "value", config.severity)).lower()
        (report.failed_critical if severity == "critical" else report.failed_warning).append(label)


def release_batches(context) -> None:
    """Let go of the frames this context validated.

    GX's pandas engine keeps every batch it was handed (its BatchManager's cache) for as long as the
    context lives, and GX's ProjectManager keeps contexts alive: a process that runs many checkpoints
    (a DAG's `dag.test()`, a Python caller looping over days, the scale benchmark's ingest) kept every
    day's events frame, 1.1 GB a day at a million users, until it ran out of memory. (Airflow's own
    task processes end after one checkpoint.)
    """
    for datasource in context.data_sources.all().values():
        manager = datasource.get_execution_engine().batch_manager
        manager.reset_batch_cache()
        manager.batch_data_cache.clear()


def _record(settings: Settings, report: ValidationReport) -> None:
    """Keep every outcome in monitoring.validation_runs: the reports index and the marts band read it."""
    from pipelines.reports.index import write_index

    validated_at = datetime.now(UTC)

    def row(suite: str, rows: int) -> tuple:
        critical = [label for label in report.failed_critical if label.startswith(f"{suite}.")]
        warning = [label for label in report.failed_warning if label.startswith(f"{suite}.")]
        page = report.pages.get(suite)
        return (
            validated_at, f"{report.checkpoint}.{suite}", report.batch, rows, not critical,
            json.dumps(critical), json.dumps(warning), str(page.relative_to(settings.reports_dir)) if page else None,
        )  # fmt: skip

    with connect(settings) as con:
        con.executemany(
            "insert into monitoring.validation_runs values (?, ?, ?, ?, ?, ?, ?, ?)",
            [row(suite, rows) for suite, rows in report.rows.items()],
        )
    write_index(settings)


def validate_raw_batch(settings: Settings, interval_start: datetime, interval_end: datetime) -> ValidationReport:
    """Checkpoint `raw_batch`: the rows ingest accepted for this interval, and the batch's reject shares."""
    days = days_in_interval(interval_start, interval_end)
    with connect(settings, must_exist=True) as con:
        events = con.execute(
            "select event_id, user_id, item_id, event_type, event_ts, value, session_id "
            "from raw.events where landing_date between ? and ?",
            [min(days), max(days)],
        ).fetch_df()
        batches = con.execute(
            "select file, rows_input, quarantined_by_reason from raw.batches "
            "where source = 'recforge' and landing_date between ? and ?",
            [min(days), max(days)],
        ).fetch_df()
    reasons = [json.loads(r) if r else {} for r in batches["quarantined_by_reason"]]
    inputs = batches["rows_input"].clip(lower=1)
    quality = pd.DataFrame(
        {
            "file": batches["file"],
            "rows_input": batches["rows_input"],
            "duplicate_share": [r.get("duplicate_event_id", 0) for r in reasons] / inputs,
            "bot_share": [r.get("bot_suspected", 0) for r in reasons] / inputs,
        }
    )
    parameters = {
        "min_event_ts": pd.Timestamp(interval_start) - timedelta(days=settings.late_arrival_days),
        "max_event_ts": pd.Timestamp(interval_end) + timedelta(seconds=settings.future_tolerance_seconds),
        "max_duplicate_share": settings.max_duplicate_share,
        "max_bot_share": settings.max_bot_share,
    }
    frames = {"raw_events": events, "raw_batch_quality": quality}
    return run_checkpoint(settings, "raw_batch", frames, f"raw_batch:{interval_start:%Y-%m-%d}", parameters)


MARTS_USERS_SQL = Path(__file__).resolve().parent / "sql" / "marts_interaction_users.sql"


def validate_marts(settings: Settings) -> ValidationReport:
    """Checkpoint `marts`: interactions (weights, grain, row count band), splits (present, ordered), item coverage.

    The interactions are checked per user (sql/marts_interaction_users.sql, in the warehouse): GX gets one row
    per user, not the mart's every row."""
    with connect(settings, must_exist=True) as con:
        interaction_users = con.execute(MARTS_USERS_SQL.read_text()).fetch_df()
        splits = con.execute(
            "select split, count(*) as n_rows, min(first_ts) as first_ts, max(last_ts) as last_ts "
            "from marts.interactions_split group by split order by min(first_ts)"
        ).fetch_df()
        # The catalog's items only: the coverage warning is about gaps in the catalog, not about
        # items seen in events that the catalog lacks.
        items = con.execute("select item_id, category, price from marts.item_features where in_catalog").fetch_df()
        withheld_users, withheld_events = con.execute(
            "select count(*), coalesce(sum(n_events_excluded), 0) from marts.consent_withheld_users"
        ).fetchone()
        previous = con.execute(
            "select rows_validated from monitoring.validation_runs where suite = 'marts.marts_interactions' "
            "and passed order by validated_at desc limit 1"
        ).fetchone()
    splits["next_first_ts"] = splits["first_ts"].shift(-1)
    band = settings.mart_row_count_band
    parameters = {
        "min_rows": int(previous[0] * (1 - band)) if previous else 1,
        "max_rows": int(previous[0] * (1 + band)) + 1 if previous else None,
    }
    frames = {"marts_interactions": interaction_users, "marts_splits": splits, "item_coverage": items}
    notes = [consent_note(withheld_users, withheld_events)]
    # The mart's rows, not its users, are what the report shows and the next run's band is taken around.
    rows = {"marts_interactions": int(interaction_users["n_rows"].sum())}
    batch = f"marts:{datetime.now(UTC):%Y-%m-%dT%H:%M}"
    return run_checkpoint(settings, "marts", frames, batch, parameters, notes, rows)


def consent_note(users: int, events: int) -> str:
    """The consent rule's count, as the marts checkpoint and `recforge status` show it."""
    return f"consent withheld: {users} user(s), {events} event(s) kept out of the marts"


PUBLICATION_SQL = Path(__file__).resolve().parent / "sql" / "publication_users.sql"


def publication_user_checks(
    settings: Settings, lists_path: Path, items: pd.DataFrame, purchased: pd.DataFrame
) -> pd.DataFrame:
    """One row per user of the lists in `lists_path`: the flags and counts the suites check.

    Computed by DuckDB over the Parquet file (sql/publication_users.sql), not in pandas: the
    lists of 1M users x 100 are 100M rows, which a frame (and a Python pass over it) cannot hold
    on this machine; the per-user result is as many rows as users.
    """
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("set memory_limit = ?", [settings.warehouse_memory_limit])
        con.register("publication_items", items[["item_id", "category", "in_stock", "is_blocked"]])
        con.register("publication_purchased", purchased[["user_id", "item_id"]])
        con.execute(PUBLICATION_SQL.read_text(), {"lists": str(lists_path), "head": settings.category_cap_head})
        return con.execute("select * from publication_user_checks").fetch_df()
    finally:
        con.close()


def validate_publication(
    settings: Settings, lists_path: Path, items: pd.DataFrame, purchased: pd.DataFrame, version: str
) -> ValidationReport:
    """Checkpoint `publication`: run on the written lists (``user_recs.parquet`` in staging) before they go live.

    `items` has item_id, category, in_stock, is_blocked; `purchased` has user_id, item_id. Both
    suites get the one-row-per-user frame of `publication_user_checks`: ``publication_lists``
    checks that no user's list holds a blocked, out-of-stock or already purchased item or repeats
    one, ``publication_users`` the list lengths and the category cap.
    """
    users = publication_user_checks(settings, lists_path, items, purchased)
    parameters = {
        "min_items": min(settings.eval_k, settings.publish_top_n),
        "max_items": settings.publish_top_n,
        "category_cap": settings.category_cap,
    }
    frames = {
        "publication_lists": users[["user_id", "is_blocked", "in_stock", "already_purchased", "repeats_an_item"]],
        "publication_users": users[["user_id", "n_items", "max_category_share_head"]],
    }
    return run_checkpoint(settings, "publication", frames, f"publication:{version}", parameters)
