"""Names that several stages, and the tools beside Python (Airflow, dbt, Great Expectations, SQL), must
spell alike: defined once here and imported by both sides.

Where a non-Python file has to carry a name (a dbt ``accepted_values`` list, a committed GX suite, a
Compose command), ``tests/test_contract.py`` checks it equals the one here, so they cannot drift apart.
This module imports only the event contract (``serving/events.py``, which the collector applies too
and which imports nothing heavy), so DAG files may import it at parse time.
"""

from serving.events import EVENT_TYPES

__all__ = ["EVENT_TYPES", "WAREHOUSE_POOL", "WAREHOUSE_POOL_DESCRIPTION", "WAREHOUSE_POOL_SLOTS"]

# The Airflow pool of every task that opens the DuckDB warehouse: one slot, because DuckDB takes one
# writing process at a time. The DAGs run their tasks in it; every launcher creates it.
WAREHOUSE_POOL = "warehouse"
WAREHOUSE_POOL_SLOTS = 1
WAREHOUSE_POOL_DESCRIPTION = "DuckDB takes one writer at a time"
