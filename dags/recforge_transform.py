"""recforge_transform: raw layer -> dbt staging, intermediate and marts, with dbt tests.

Scheduled by RAW_EVENTS (recforge_ingest); feeds MARTS, which schedules recforge_train.
"""

from datetime import timedelta

import pendulum
from airflow.sdk import Metadata, dag, task

from dags.assets import MARTS, RAW_EVENTS


@dag(
    dag_id="recforge_transform",
    schedule=[RAW_EVENTS],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["recforge", "dbt"],
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1)},
)
def recforge_transform():
    """Rebuild the warehouse models and run every dbt test."""

    @task(outlets=[MARTS])
    def build_marts():
        """`dbt build`: a failed model or test fails this task and nothing downstream runs."""
        from pipelines.settings import get_settings
        from pipelines.transform import build_warehouse

        result = build_warehouse(get_settings())
        yield Metadata(MARTS, {"nodes": result.nodes_total, "warnings": result.nodes_warned})

    build_marts()


recforge_transform()
