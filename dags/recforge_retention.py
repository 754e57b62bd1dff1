"""recforge_retention: purge events older than RECFORGE_RETENTION_DAYS, daily, through forget's store walkers.

Reads and writes the same stores as recforge_forget (landing files, the raw layer, quarantine,
batches, every dbt model, the warehouse file) and nothing else; feeds no asset (models and
publications are derived and change at the next training). With RECFORGE_RETENTION_DAYS=0 the
task records nothing and ends at once.
"""

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

from dags.assets import WAREHOUSE_POOL


@dag(
    dag_id="recforge_retention",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["recforge", "privacy"],
    default_args={"retries": 1, "retry_delay": timedelta(minutes=5), "pool": WAREHOUSE_POOL},
)
def recforge_retention():
    """Once a day: every event older than the retention setting leaves every store forgetting reaches."""

    @task
    def purge_expired_events() -> str:
        """Purge the events older than the cutoff (now minus the setting) and write the audit row."""
        from pipelines.privacy.retention import purge_expired
        from pipelines.settings import get_settings

        return purge_expired(get_settings()).summary()

    purge_expired_events()


recforge_retention()
