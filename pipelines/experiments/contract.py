"""The experiment readout's input, named once: the slate-item relation and its columns.

One row per item shown in a served slate (or logged as shadow), joined with what the user then did
within the attribution window: the grain the impressions mart provides (dbt, from the impressions
serving logs and the outcome events). The readout (pipelines/experiments/readout.py), its benchmark
and its tests build their SQL from these names, and the mart's producer must spell them alike.
It imports only serving.experiments (standard library), so a DAG file may import it at parse time.
"""

from serving.experiments import HOLDBACK

# The relation the readout reads (schema.table in the warehouse).
SLATE_ITEMS_RELATION = "marts.slate_items"

# Column -> DuckDB type, in order: the shape of SLATE_ITEMS_RELATION.
SLATE_ITEM_COLUMNS = {
    "request_id": "VARCHAR",  # one served answer
    "user_id": "VARCHAR",  # the randomisation unit
    "experiment": "VARCHAR",
    "variant": "VARCHAR",  # a declared variant, HOLDBACK, or a shadow variant's name (never shown)
    "item_id": "VARCHAR",
    "position": "INTEGER",  # 1-based position in the slate
    "clicked": "BOOLEAN",  # clicked within the attribution window
    "converted": "BOOLEAN",  # purchased within the attribution window
    "revenue": "DOUBLE",  # revenue attributed to this impression (0 when none)
    "event_ts": "TIMESTAMP WITH TIME ZONE",  # when the slate was served (UTC)
}

# Metric -> the per-impression column it averages; every metric is a ratio over impressions, and the
# per-user sums of its column and of impressions are what the statistics see (users are the unit).
METRICS = {
    "ctr": "clicked",
    "conversion": "converted",
    "revenue_per_impression": "revenue",
}

# The covariate CUPED adjusts with: a user's accepted events before the experiment began (marts).
PRE_PERIOD_RELATION = "marts.interaction_events"

__all__ = ["HOLDBACK", "METRICS", "PRE_PERIOD_RELATION", "SLATE_ITEMS_RELATION", "SLATE_ITEM_COLUMNS"]
