"""The health check: every service level measured from where it lives, stored, and enforced.

Levels are the ``slo_*`` settings (docs/operations.md). Each is measured from its own source: the
warehouse (when the newest accepted event arrived, the week's checkpoint pass rate), the last
successful ``dbt build``, the registry (the champion's age), the publication (the live
version's age) and, when ``serving_metrics_url`` names a running API, serving's own counters since
it started (p99 latency, 5xx share, fallback share). Results go to ``monitoring.health_checks``
(replaced per run, so a retried check stores one set), the operators' webhook hears of breaches
once per run (``monitoring.health_notifications``), and ``enforce`` fails naming each breached
level. Measuring also stores the counts of serving's failure log by day and reason
(``monitoring.failed_requests``, pipelines/operations/failures.py), which the weekly report reads
after the log has rotated. recforge_health runs the three steps as separate tasks, so a webhook that is down never
blocks the check and a retry of the check never notifies twice.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pipelines.settings import Settings

log = logging.getLogger(__name__)


class ServiceLevelBreached(RuntimeError):
    pass


@dataclass(frozen=True)
class Level:
    objective_setting: str
    above_is_breach: bool  # False: a value below the objective breaches (a pass rate)
    means: str


LEVELS: dict[str, Level] = {
    "publication_age_hours": Level("slo_publication_age_hours", True, "age of the live publication"),
    "newest_event_age_hours": Level("slo_data_age_hours", True, "time since the newest accepted event arrived"),
    "mart_build_age_hours": Level("slo_data_age_hours", True, "time since dbt last built the marts"),
    "model_age_days": Level("slo_model_age_days", True, "age of the champion model version"),
    "validation_pass_rate": Level("slo_validation_pass_rate", False, "share of the week's checkpoint runs passed"),
    "serving_p99_seconds": Level("slo_serving_p99_seconds", True, "serving p99 latency since it started"),
    "serving_error_rate": Level("slo_error_rate", True, "share of serving's API answers that were 5xx"),
    "fallback_share": Level("slo_fallback_share", True, "share of recommendation answers from the fallback"),
}


# The levels read from serving's /metrics (the rest come from the pipeline's own stores).
SERVING_LEVELS = ("serving_p99_seconds", "serving_error_rate", "fallback_share")


@dataclass(frozen=True)
class Check:
    level: str
    value: float | None  # None: could not be measured (detail says why); never a breach
    objective: float
    detail: str = ""

    @property
    def breached(self) -> bool:
        if self.value is None:
            return False
        return self.value > self.objective if LEVELS[self.level].above_is_breach else self.value < self.objective

    def line(self) -> str:
        if self.value is None:
            return f"{self.level}: not measured ({self.detail})"
        sign = (">" if LEVELS[self.level].above_is_breach else "<") if self.breached else "within"
        shown = (
            f"{self.value:.4g} {sign} {self.objective:g}"
            if self.breached
            else f"{self.value:.4g}, {sign} {self.objective:g}"
        )
        return f"{self.level}: {shown} ({LEVELS[self.level].means})"


@dataclass
class HealthReport:
    run_id: str
    checked_at: datetime
    checks: list[Check]

    @property
    def breached(self) -> list[Check]:
        return [c for c in self.checks if c.breached]

    def summary(self) -> str:
        head = (
            f"{len(self.breached)} of {len(self.checks)} service levels breached"
            if self.breached
            else "all service levels met"
        )
        return head + "\n" + "\n".join(f"  {c.line()}" for c in self.checks)


def _hours(since: datetime | None, now: datetime) -> float | None:
    if since is None:
        return None
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return (now - since).total_seconds() / 3600


def _or_why(value: float | None, why_not: str) -> tuple[float | None, str]:
    """A measured value with no detail, or None with the reason it could not be measured."""
    return value, ("" if value is not None else why_not)


def warehouse_checks(settings: Settings, now: datetime) -> dict[str, tuple[float | None, str]]:
    from pipelines.warehouse.connection import connect, warehouse_exists
    from pipelines.warehouse.transform import last_build

    if not warehouse_exists(settings):
        names = ("newest_event_age_hours", "mart_build_age_hours", "validation_pass_rate")
        return {name: (None, "no warehouse yet") for name in names}
    with connect(settings) as con:
        newest_event = con.execute("select max(ingested_at) from raw.events").fetchone()[0]
        week = con.execute(
            "select count(*), count(*) filter (where passed) from monitoring.validation_runs where validated_at >= ?",
            [now - timedelta(days=7)],
        ).fetchone()
    return {
        "newest_event_age_hours": _or_why(_hours(newest_event, now), "no accepted event yet"),
        "mart_build_age_hours": _or_why(_hours(last_build(settings), now), "dbt build never succeeded here"),
        "validation_pass_rate": _or_why(week[1] / week[0] if week[0] else None, "no checkpoint ran this week"),
    }


def registry_check(settings: Settings, now: datetime) -> tuple[float | None, str]:
    from pipelines.training.tracking import CHAMPION, configure, version_by_alias

    champion = version_by_alias(configure(settings), settings.registered_model_name, CHAMPION)
    if champion is None:
        return None, "no champion yet"
    registered = datetime.fromtimestamp(champion.creation_timestamp / 1000, UTC)
    return _hours(registered, now) / 24, f"v{champion.version}"


def publication_check(settings: Settings, now: datetime) -> tuple[float | None, str]:
    from pipelines.publication.publish import current_version
    from serving.format import read_manifest

    version = current_version(settings.published_dir)
    if version is None:
        return None, "nothing published yet"
    manifest = read_manifest(settings.published_dir / version)
    return _hours(datetime.fromisoformat(manifest["created_at"]), now), version


def serving_checks(settings: Settings) -> dict[str, tuple[float | None, str]]:
    """Serving's levels from its /metrics: counters since the server started."""
    from prometheus_client.parser import text_string_to_metric_families

    from serving.metrics import API_PREFIX, FALLBACKS, LATENCY, RECOMMENDATIONS_ENDPOINT, REQUESTS

    if not settings.serving_metrics_url:
        return {name: (None, "RECFORGE_SERVING_METRICS_URL is not set") for name in SERVING_LEVELS}
    try:
        with urllib.request.urlopen(settings.serving_metrics_url, timeout=10) as response:
            text = response.read().decode()
    except OSError as error:
        return {name: (None, f"{settings.serving_metrics_url} did not answer: {error}") for name in SERVING_LEVELS}
    buckets: dict[float, float] = {}
    requests = errors = recommendations = fallbacks = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            endpoint = sample.labels.get("endpoint", "")
            if sample.name == f"{LATENCY}_bucket" and endpoint.startswith(API_PREFIX):
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
            elif sample.name == REQUESTS and endpoint.startswith(API_PREFIX):
                requests += sample.value
                errors += sample.value if sample.labels["status"].startswith("5") else 0.0
                recommendations += sample.value if endpoint == RECOMMENDATIONS_ENDPOINT else 0.0
            elif sample.name == FALLBACKS:
                fallbacks += sample.value
    return {
        "serving_p99_seconds": _or_why(quantile_from_buckets(buckets, 0.99), "no API request yet"),
        "serving_error_rate": _or_why(errors / requests if requests else None, "no API request yet"),
        "fallback_share": _or_why(fallbacks / recommendations if recommendations else None, "no recommendation yet"),
    }


def quantile_from_buckets(buckets: dict[float, float], q: float) -> float | None:
    """Prometheus' histogram_quantile on cumulative buckets (linear within the bucket)."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] == 0:
        return None
    rank, previous_bound, previous_count = q * buckets[bounds[-1]], 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return previous_bound
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / max(
                count - previous_count, 1e-12
            )
        previous_bound, previous_count = bound, count
    return previous_bound


def measure(settings: Settings, run_id: str, now: datetime | None = None) -> HealthReport:
    """Measure every level, store the results (replacing this run's), and return them."""
    now = now or datetime.now(UTC)
    measured: dict[str, tuple[float | None, str]] = {
        "publication_age_hours": publication_check(settings, now),
        **warehouse_checks(settings, now),
        "model_age_days": registry_check(settings, now),
        **serving_checks(settings),
    }
    checks = []
    for name, level in LEVELS.items():
        value, detail = measured[name]
        checks.append(Check(name, value, getattr(settings, level.objective_setting), detail))
    report = HealthReport(run_id, now, checks)
    store(settings, report)
    log.info(report.summary())
    _record_failure_counts(settings)
    return report


def _record_failure_counts(settings: Settings) -> None:
    """Keep serving's failure counts by day and reason beyond the log's rotation (for the weekly report).

    Diagnosis, not a level: an unreadable log is logged and never fails the check.
    """
    from pipelines.operations.failures import record_failure_counts

    try:
        record_failure_counts(settings)
    except (OSError, ValueError) as error:
        log.warning("could not record serving's failure counts: %s", error)


def store(settings: Settings, report: HealthReport) -> None:
    from pipelines.warehouse.connection import connect

    with connect(settings) as con, con.transaction():
        con.execute("delete from monitoring.health_checks where run_id = ?", [report.run_id])
        for check in report.checks:
            con.execute(
                "insert into monitoring.health_checks (checked_at, run_id, level, value, objective, breached, detail) "
                "values (?, ?, ?, ?, ?, ?, ?)",
                [report.checked_at, report.run_id, check.level, check.value, check.objective, check.breached,
                 check.detail],
            )  # fmt: skip


def stored(settings: Settings, run_id: str) -> HealthReport:
    from pipelines.warehouse.connection import connect

    with connect(settings) as con:
        rows = con.execute(
            "select checked_at, level, value, objective, detail from monitoring.health_checks where run_id = ?",
            [run_id],
        ).fetchall()
    if not rows:
        raise LookupError(f"no health check stored for run {run_id!r}: measure first")
    order = list(LEVELS)
    checks = sorted((Check(level, value, objective, detail or "") for _, level, value, objective, detail in rows),
                    key=lambda c: order.index(c.level))  # fmt: skip
    return HealthReport(run_id, rows[0][0], checks)


def notify(settings: Settings, run_id: str, post: Callable[[str, bytes], None] | None = None) -> str:
    """Tell the webhook about this run's breaches, once; a failure is logged, never raised."""
    from pipelines.warehouse.connection import connect

    report = stored(settings, run_id)
    if not report.breached:
        return "no breach: nobody to tell"
    if not settings.health_webhook_url:
        return "breaches, but RECFORGE_HEALTH_WEBHOOK_URL is not set: nobody told"
    with connect(settings) as con:
        if con.execute("select count(*) from monitoring.health_notifications where run_id = ?", [run_id]).fetchone()[0]:
            return f"already told for run {run_id}"
    text = f"recforge health ({run_id}): {report.summary()}"
    body = json.dumps({"text": text}).encode()
    post = post or _post
    for attempt in range(1, settings.health_webhook_attempts + 1):
        try:
            post(settings.health_webhook_url, body)
            break
        except OSError as error:
            log.warning("webhook attempt %d of %d failed: %s", attempt, settings.health_webhook_attempts, error)
            if attempt == settings.health_webhook_attempts:
                return f"webhook failed {attempt} time(s): the breaches are in monitoring.health_checks"
            time.sleep(min(2 ** (attempt - 1), 30) * 0.5)
    with connect(settings) as con:
        con.execute(
            "insert into monitoring.health_notifications (run_id, notified_at, breached) values (?, ?, ?)",
            [run_id, datetime.now(UTC), ",".join(c.level for c in report.breached)],
        )
    return f"told the webhook about {len(report.breached)} breach(es)"


def _post(url: str, body: bytes) -> None:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status >= 300:
            raise OSError(f"HTTP {response.status}")


def enforce(settings: Settings, run_id: str) -> HealthReport:
    """Fail, naming every breached level with its value and objective."""
    report = stored(settings, run_id)
    if report.breached:
        raise ServiceLevelBreached("service level(s) breached: " + "; ".join(c.line() for c in report.breached))
    return report
