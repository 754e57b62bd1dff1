"""recforge_ingest: landing files of one day -> raw.events (+ quarantine), checked by GX.

Feeds RAW_EVENTS, which schedules recforge_transform. Each run owns exactly the landing
files (JSONL, CSV, Parquet) of its data interval and replaces their rows, so retries and
backfills (`airflow backfill create --dag-id recforge_ingest ...`) are safe.
"""

from datetime import timedelta

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Metadata, dag, task

from dags.assets import RAW_EVENTS, WAREHOUSE_POOL
from pipelines.settings import get_settings

settings = get_settings()


@dag(
    dag_id="recforge_ingest",
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.datetime(*settings.ingest_start_date.timetuple()[:3], tz="UTC"),
    end_date=pendulum.datetime(*settings.ingest_end_date.timetuple()[:3], tz="UTC")
    if settings.ingest_end_date
    else None,
    catchup=settings.ingest_catchup,
    max_active_runs=1,
    tags=["recforge", "ingest"],
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1), "pool": WAREHOUSE_POOL},
)
def recforge_ingest():
    """Ingest one day of events, then validate the accepted rows with the raw_events suite."""

    @task
    def ingest_events(data_interval_start=None, data_interval_end=None) -> dict:
        """Replace this interval's rows in raw.events; rejected rows go to quarantine.events with a reason."""
        from pipelines.ingest import ingest_interval
        from pipelines.settings import get_settings

        result = ingest_interval(get_settings(), data_interval_start, data_interval_end)
        return {"input": result.rows_input, "accepted": result.rows_accepted, "quarantined": result.rows_quarantined}

    @task(outlets=[RAW_EVENTS], retries=0)
    def validate_raw_events(counts: dict, data_interval_start=None, data_interval_end=None):
        """Run the raw_events checkpoint; a critical failure stops the chain here."""
        from pipelines.settings import get_settings
        from pipelines.validation.checkpoints import validate_raw_batch

        validate_raw_batch(get_settings(), data_interval_start, data_interval_end)
        yield Metadata(RAW_EVENTS, {**counts, "interval_start": data_interval_start.isoformat()})

    validate_raw_events(ingest_events())


recforge_ingest()
