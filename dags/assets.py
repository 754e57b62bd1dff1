"""The Assets that chain recforge's DAGs, declared once and imported by producer and consumer.

recforge_ingest --RAW_EVENTS--> recforge_transform --MARTS--> recforge_drift
    --DRIFT (only when drift is measured)--> recforge_train (also weekly)
    --CHAMPION (only when a model is promoted)--> recforge_publish --PUBLICATION--> serving
"""

from airflow.sdk import Asset

from pipelines.contract import WAREHOUSE_POOL

RAW_EVENTS = Asset("recforge://warehouse/raw/events", group="warehouse")
MARTS = Asset("recforge://warehouse/marts", group="warehouse")
DRIFT = Asset("recforge://monitoring/drift", group="monitoring")
CHAMPION = Asset("recforge://registry/recforge-recommender/champion", group="models")
PUBLICATION = Asset("recforge://published/current", group="serving")

__all__ = ["CHAMPION", "DRIFT", "MARTS", "PUBLICATION", "RAW_EVENTS", "WAREHOUSE_POOL"]
