"""The Assets that chain recforge's DAGs, declared once and imported by producer and consumer.

recforge_ingest --RAW_EVENTS--> recforge_transform --MARTS--> recforge_train
    --CHAMPION (only when a model is promoted)--> recforge_publish --PUBLICATION--> serving
"""

from airflow.sdk import Asset

RAW_EVENTS = Asset("recforge://warehouse/raw/events", group="warehouse")
MARTS = Asset("recforge://warehouse/marts", group="warehouse")
CHAMPION = Asset("recforge://registry/recforge-recommender/champion", group="models")
PUBLICATION = Asset("recforge://published/current", group="serving")
