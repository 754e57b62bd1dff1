"""Run Great Expectations checkpoints and turn their results into a go / no-go.

Every expectation in ``expectations/`` carries a severity. A failed ``critical``
expectation raises ``ValidationFailed`` naming the suite, the failed expectations and
the batch, so the Airflow task fails and nothing downstream runs; failed ``warning``
expectations are logged and reported in Data Docs, and the run goes on.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from pipelines.ingest import days_in_interval
from pipelines.settings import Settings
from pipelines.warehouse import connect

log = logging.getLogger(__name__)


class ValidationFailed(RuntimeError):
    """A critical expectation failed."""


@dataclass
class ValidationReport:
    suite: str
    batch: str
    rows: int
    failed_critical: list[str] = field(default_factory=list)
    failed_warning: list[str] = field(default_factory=list)
    data_docs: Path | None = None

    @property
    def passed(self) -> bool:
        return not self.failed_critical

    def summary(self) -> str:
        status = "passed" if self.passed else "FAILED"
        warnings = f"; warnings: {', '.join(self.failed_warning)}" if self.failed_warning else ""
        critical = f"; critical failures: {', '.join(self.failed_critical)}" if self.failed_critical else ""
        return f"suite {self.suite!r} on batch {self.batch!r} ({self.rows} rows) {status}{critical}{warnings}"


def runtime_context(settings: Settings):
    """A GX File Data Context working on a copy of expectations/ under RECFORGE_HOME.

    The committed context is the source of truth; the copy takes GX's runtime writes
    (validation results) so the repository stays clean and can even be read-only.
    """
    import great_expectations as gx

    runtime = settings.home / "gx"
    runtime.mkdir(parents=True, exist_ok=True)
    for entry in settings.expectations_dir.iterdir():
        if entry.name == "uncommitted":
            continue
        target = runtime / entry.name
        if entry.is_dir():
            shutil.copytree(entry, target, dirs_exist_ok=True)
        else:
            shutil.copy2(entry, target)
    docs = settings.reports_dir / "data_docs"
    docs.mkdir(parents=True, exist_ok=True)
    os.environ["RECFORGE_DATA_DOCS_DIR"] = str(docs) + os.sep
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    return gx.get_context(mode="file", context_root_dir=str(runtime))


def run_checkpoint(
    settings: Settings, name: str, frame: pd.DataFrame, batch: str, parameters: dict | None = None
) -> ValidationReport:
    """Run the checkpoint `name` on `frame`; raise ValidationFailed if a critical expectation fails."""
    from great_expectations.core.run_identifier import RunIdentifier

    context = runtime_context(settings)
    checkpoint = context.checkpoints.get(name)
    result = checkpoint.run(
        batch_parameters={"dataframe": frame},
        expectation_parameters=parameters or {},
        run_id=RunIdentifier(run_name=batch),
    )
    report = ValidationReport(suite=name, batch=batch, rows=len(frame))
    for validation in result.run_results.values():
        for outcome in validation.results:
            if outcome.success:
                continue
            config = outcome.expectation_config
            label = f"{config.type}({config.kwargs.get('column', 'table')})"
            severity = str(getattr(config.severity, "value", config.severity)).lower()
            (report.failed_critical if severity == "critical" else report.failed_warning).append(label)
    report.data_docs = settings.reports_dir / "data_docs" / "index.html"
    if report.passed:
        log.info(report.summary())
    else:
        log.error(report.summary())
        raise ValidationFailed(report.summary() + f" (Data Docs: {report.data_docs})")
    return report


def validate_raw_batch(settings: Settings, interval_start: datetime, interval_end: datetime) -> ValidationReport:
    """The `raw_events` checkpoint on the rows ingest accepted for this interval."""
    days = days_in_interval(interval_start, interval_end)
    with connect(settings, must_exist=True) as con:
        frame = con.execute(
            "select event_id, user_id, item_id, event_type, event_ts, value, session_id "
            "from raw.events where landing_date between ? and ?",
            [min(days), max(days)],
        ).fetch_df()
    parameters = {
        "min_event_ts": pd.Timestamp(interval_start) - timedelta(days=settings.late_arrival_days),
        "max_event_ts": pd.Timestamp(interval_end) + timedelta(seconds=settings.future_tolerance_seconds),
    }
    return run_checkpoint(settings, "raw_events", frame, f"raw_events:{interval_start:%Y-%m-%d}", parameters)
