"""recforge_health: every service level measured, the operators told of breaches, and the run failed naming them.

Scheduled daily (the health_cron setting) and after every publication (PUBLICATION). The three
steps are separate tasks: the webhook (retried inside its task) never blocks or fails the check,
and the check's own retry never tells the operators twice (pipelines/operations/health.py).
"""

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

from dags.assets import PUBLICATION, WAREHOUSE_POOL, asset_or_cron
from pipelines.settings import get_settings

settings = get_settings()


@dag(
    dag_id="recforge_health",
    schedule=asset_or_cron(PUBLICATION, settings.health_cron),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["recforge", "operations"],
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1), "pool": WAREHOUSE_POOL},
)
def recforge_health():
    """Measure the service levels of docs/operations.md, tell the webhook, fail on a breach."""

    @task
    def measure_service_levels(run_id=None) -> dict:
        """Store one row per level in monitoring.health_checks (this run's rows replaced on retry)."""
        from pipelines.operations.health import measure

        report = measure(get_settings(), run_id)
        return {"breached": [c.level for c in report.breached]}

    @task(retries=0)
    def notify_operators(measured: dict, run_id=None) -> str:
        """Post the breaches to RECFORGE_HEALTH_WEBHOOK_URL once per run; a failed delivery is logged, never raised."""
        from pipelines.operations.health import notify

        return notify(get_settings(), run_id)

    @task
    def write_weekly_report(measured: dict) -> str:
        """reports/health/weekly.html (linked from reports/index.html), written whether or not a level broke."""
        from pipelines.reports.health_report import write_health_report

        return str(write_health_report(get_settings()))

    @task(retries=0)
    def enforce_service_levels(measured: dict, run_id=None) -> None:
        """Fail, naming every breached level with its value and objective."""
        from pipelines.operations.health import enforce

        enforce(get_settings(), run_id)

    measured = measure_service_levels()
    [notify_operators(measured), write_weekly_report(measured)] >> enforce_service_levels(measured)


recforge_health()
