"""recforge_stream_ingest: the collector's closed segments -> raw.events (+ quarantine), as micro-batches.

Scheduled every few minutes (stream_ingest_cron) on the embedded default; with the Redis backend
(RECFORGE_COLLECTOR_BACKEND=redis) by the stream itself: an Asset whose AssetWatcher runs
pipelines.ingest.stream_trigger.RedisStreamTrigger in the triggerer.

Micro-batches of what apps sent to POST /v1/events (landing/stream/), through the same adapter,
rules, quarantine and batch accounting as recforge_ingest's daily files; a segment ingested again
replaces itself. Emits RAW_EVENTS (which schedules recforge_transform) only when a run ingested
something, so an idle stream schedules nothing downstream.
"""

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, AssetWatcher, CronTriggerTimetable, Metadata, dag, task

from dags.assets import RAW_EVENTS, WAREHOUSE_POOL
from pipelines.settings import get_settings
from serving.config import settings_without_app_key

settings = get_settings()
collector = settings_without_app_key(settings.home)


def stream_schedule():
    """The Redis Stream as a watched asset when the collector writes to Redis, else the cron (or none)."""
    if collector.collector_backend == "redis":
        from pipelines.ingest.stream_trigger import RedisStreamTrigger

        trigger = RedisStreamTrigger(collector.collector_redis_url, collector.collector_redis_stream)
        watcher = AssetWatcher(name="recforge_event_stream", trigger=trigger)
        return [Asset("recforge://collector/event-stream", group="ingest", watchers=[watcher])]
    if settings.stream_ingest_cron:
        return CronTriggerTimetable(settings.stream_ingest_cron, timezone="UTC")
    return None


@dag(
    dag_id="recforge_stream_ingest",
    schedule=stream_schedule(),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["recforge", "ingest", "stream"],
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1), "pool": WAREHOUSE_POOL},
)
def recforge_stream_ingest():
    """Ingest the closed segments no batch records yet, then announce the new raw events."""

    @task
    def ingest_stream_segments() -> dict:
        """One batch per closed segment, in its landing day's time window; rejected rows go to quarantine."""
        from pipelines.ingest import ingest_stream
        from pipelines.settings import get_settings

        result = ingest_stream(get_settings())
        return {
            "segments": len(result.batches),
            "input": result.rows_input,
            "accepted": result.rows_accepted,
            "quarantined": result.rows_quarantined,
        }

    @task.short_circuit
    def ingested_any(counts: dict) -> bool:
        """No new segment: the chain stops here and nothing downstream is scheduled."""
        return counts["segments"] > 0

    @task(outlets=[RAW_EVENTS])
    def announce_raw_events(counts: dict):
        """Emit RAW_EVENTS with the run's counts, which schedules recforge_transform."""
        yield Metadata(RAW_EVENTS, {**counts, "source": "stream"})

    counts = ingest_stream_segments()
    ingested_any(counts) >> announce_raw_events(counts)


recforge_stream_ingest()
