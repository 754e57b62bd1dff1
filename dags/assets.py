"""The Assets that chain recforge's DAGs, declared once and imported by producer and consumer.

recforge_ingest --RAW_EVENTS--> recforge_transform --MARTS--> recforge_drift
    --DRIFT (only when drift is measured)--> recforge_train (also weekly)
    --CHAMPION (only when a model is promoted)--> recforge_publish --PUBLICATION--> serving
"""

from airflow.sdk import Asset

RAW_EVENTS = Asset("recforge://warehouse/raw/events", group="warehouse")
MARTS = Asset("recforge://warehouse/marts", group="warehouse")
DRIFT = Asset("recforge://monitoring/drift", group="monitoring")
CHAMPION = Asset("recforge://registry/recforge-recommender/champion", group="models")
PUBLICATION = Asset("recforge://published/current", group="serving")

# The Airflow pool of every task that opens the DuckDB warehouse: one slot, because DuckDB takes one
# writing process at a time. pipelines/orchestrate.py and pipelines/scaled.py create it.
WAREHOUSE_POOL = "warehouse"
