"""recforge_transform: raw layer -> dbt staging, intermediate and marts, with dbt tests, then GX.

Scheduled by RAW_EVENTS (recforge_ingest); feeds MARTS, which schedules recforge_drift.
"""

from datetime import timedelta

import pendulum
from airflow.sdk import Metadata, dag, task

from dags.assets import MARTS, RAW_EVENTS, WAREHOUSE_POOL


@dag(
    dag_id="recforge_transform",
    schedule=[RAW_EVENTS],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["recforge", "dbt"],
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1), "pool": WAREHOUSE_POOL},
)
def recforge_transform():
    """Rebuild the warehouse models, run every dbt test, document them, and validate the marts."""

    @task
    def build_marts() -> dict:
        """`dbt build`: a failed model or test fails this task and nothing downstream runs."""
        from pipelines.settings import get_settings
        from pipelines.warehouse.transform import build_warehouse

        result = build_warehouse(get_settings())
        return {"nodes": result.nodes_total, "warnings": result.nodes_warned}

    @task
    def document_warehouse(built: dict) -> None:
        """`dbt docs generate --static` into reports/dbt_docs for analysts."""
        from pipelines.settings import get_settings
        from pipelines.warehouse.transform import generate_docs

        generate_docs(get_settings())

    @task(outlets=[MARTS], retries=0)
    def validate_marts(built: dict):
        """The `marts` checkpoint: row-count band, weights, splits, coverage. Critical failures stop here."""
        from pipelines.settings import get_settings
        from pipelines.validation.checkpoints import validate_marts as validate

        report = validate(get_settings())
        yield Metadata(MARTS, {**built, "rows": report.rows.get("marts_interactions", 0)})

    built = build_marts()
    document_warehouse(built)
    validate_marts(built)


recforge_transform()
