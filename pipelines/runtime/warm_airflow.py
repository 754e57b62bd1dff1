"""`python -m pipelines.runtime.warm_airflow scheduler ...`: Airflow's CLI with the stage libraries imported first.

Airflow runs each task in a process forked from an executor worker (Linux), and the LocalExecutor
forks its workers from the scheduler; the Celery worker forks its pool likewise. Importing what the
DAG tasks import (Great Expectations alone takes two seconds, longer than the ingest task it
validates) once in the parent means no task pays for it again: `make run` ingests 28 days, 56 tasks.
The embedded scheduler is started through this module; the Celery workers preload the same list on
their ``worker_init`` signal (pipelines/runtime/celery_config.py).
"""

from __future__ import annotations

import importlib
import sys

# What the DAG tasks import inside their functions, heaviest first. Nothing here starts a thread or
# opens a file at import, so a fork after importing them is safe.
PRELOADED_MODULES = (
    "great_expectations",
    "dbt.cli.main",  # 1.6 s, paid by both dbt tasks of every transform run otherwise
    "dbt.adapters.duckdb",
    "pipelines.validation.checkpoints",
    "pipelines.ingest",
    "pipelines.warehouse.transform",
    "pandas",
)


def preload() -> None:
    for name in PRELOADED_MODULES:
        importlib.import_module(name)


def main() -> int:
    preload()
    from airflow.__main__ import main as airflow_main

    sys.argv[0] = "airflow"
    return airflow_main()


if __name__ == "__main__":
    sys.exit(main())
