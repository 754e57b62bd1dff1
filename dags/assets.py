"""The Assets that chain recforge's DAGs, declared once and imported by producer and consumer.

recforge_ingest (daily files), recforge_stream_ingest (the collector's segments, only when it ingested some)
    --RAW_EVENTS--> recforge_transform --MARTS--> recforge_drift
    --DRIFT (only when drift is measured)--> recforge_train (also weekly)
    --CHAMPION (only when a model is promoted)--> recforge_publish --PUBLICATION--> serving
"""

from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable

from pipelines.contract import WAREHOUSE_POOL

RAW_EVENTS = Asset("recforge://warehouse/raw/events", group="warehouse")
MARTS = Asset("recforge://warehouse/marts", group="warehouse")
DRIFT = Asset("recforge://monitoring/drift", group="monitoring")
CHAMPION = Asset("recforge://registry/recforge-recommender/champion", group="models")
PUBLICATION = Asset("recforge://published/current", group="serving")


def asset_or_cron(asset: Asset, cron: str):
    """Scheduled by `asset`, and also by `cron` (UTC) unless the cron setting is empty.

    `recforge run` empties the crons for its scheduler: unpausing a DAG with a cron schedule would
    start a run for its latest tick at once.
    """
    if not cron:
        return [asset]
    return AssetOrTimeSchedule(timetable=CronTriggerTimetable(cron, timezone="UTC"), assets=asset)


__all__ = ["CHAMPION", "DRIFT", "MARTS", "PUBLICATION", "RAW_EVENTS", "WAREHOUSE_POOL", "asset_or_cron"]
