"""Names that several stages, and the tools beside Python (Airflow, dbt, Great Expectations, SQL), must
spell alike: defined once here and imported by both sides.

Where a non-Python file has to carry a name (a dbt ``accepted_values`` list, a committed GX suite, a
Compose command), ``tests/test_contract.py`` checks it equals the one here, so they cannot drift apart.
This module imports nothing, so DAG files may import it at parse time.
"""

# The canonical event types (docs/architecture.md, "Event contract"). Ingest quarantines any other
# type as ``unknown_event_type``; the dbt signal weights and the GX raw_events suite name the same set.
EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "rating")

# The Airflow pool of every task that opens the DuckDB warehouse: one slot, because DuckDB takes one
# writing process at a time. The DAGs run their tasks in it; every launcher creates it.
WAREHOUSE_POOL = "warehouse"
WAREHOUSE_POOL_SLOTS = 1
WAREHOUSE_POOL_DESCRIPTION = "DuckDB takes one writer at a time"
