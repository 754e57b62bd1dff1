"""The Airflow configuration of a RECFORGE_HOME: environment variables, the metadata DB, the pool.

Every launcher (`recforge run`, `recforge ui`, `recforge backfill`, the scaled stack) starts from
these, so the processes of one home always agree on where the metadata DB, the DAGs and the task
logs are, and a copied or moved home never reads or writes the old location.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pipelines.contract import WAREHOUSE_POOL, WAREHOUSE_POOL_DESCRIPTION, WAREHOUSE_POOL_SLOTS
from pipelines.runtime import airflow_db
from pipelines.settings import Settings

# `airflow ...` arguments that create the warehouse pool the DAGs run in: docker-compose.yml's init
# service runs them after `airflow db migrate`; launchers here do both in one process (airflow_db.py).
CREATE_WAREHOUSE_POOL = ("pools", "set", WAREHOUSE_POOL, str(WAREHOUSE_POOL_SLOTS), WAREHOUSE_POOL_DESCRIPTION)


def api_health_url(port: int) -> str:
    """Where an Airflow API server on this host says it is up."""
    return f"http://127.0.0.1:{port}/api/v2/monitor/health"


class AirflowSetupFailed(RuntimeError):
    pass


def metadata_db(settings: Settings) -> Path:
    """The embedded default's Airflow metadata DB (SQLite)."""
    return settings.airflow_home / "airflow.db"


def airflow_environment(settings: Settings) -> dict[str, str]:
    """The Airflow configuration of the embedded default, as environment variables.

    Airflow writes an ``airflow.cfg`` with absolute paths into AIRFLOW_HOME on first start; every
    one of them is overridden here from the current home, so a copied or moved RECFORGE_HOME never
    reads or writes the old location (tests/runtime/test_airflow_home.py checks the list is complete).
    """
    home = settings.airflow_home
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.dags_dir),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{metadata_db(settings)}",
        # One SQLite writer at a time: every process waits its turn instead of "database is locked".
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "pipelines.runtime.backfill.SQLITE_CONNECT_ARGS",
        "RECFORGE_AIRFLOW_DB_LOCK_TIMEOUT_SECONDS": str(settings.airflow_db_lock_timeout_seconds),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__LOGGING__DAG_PROCESSOR_CHILD_PROCESS_LOG_DIRECTORY": str(home / "logs" / "dag_processor"),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        # Task slots sized to the machine (Airflow's default of 32 LocalExecutor workers swamps 2 cores).
        "AIRFLOW__CORE__PARALLELISM": str(os.cpu_count() or 1),
        "RECFORGE_HOME": str(settings.home),
        # A progress bar redrawn on stderr is a wall of "errors" in a task log.
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }


def local_executor_environment(settings: Settings, host: str, port: int) -> dict[str, str]:
    """The embedded default's scheduler, DAG processor and API server: LocalExecutor on SQLite.

    Shared by `recforge run` (which drives its DAG runs through these processes) and `recforge ui`.
    Task runners reach the API server's execution API at `host`:`port` and are found on PATH.
    """
    bin_dir = Path(sys.executable).parent
    reach = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # where local clients connect
    return {
        **airflow_environment(settings),
        "AIRFLOW__API__HOST": host,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{reach}:{port}/execution/",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def configure_airflow(settings: Settings, log_level: str = "INFO") -> None:
    """Export the Airflow settings and migrate the metadata DB. Must run before airflow is imported."""
    if "airflow" in sys.modules and os.environ.get("AIRFLOW_HOME") != str(settings.airflow_home):
        raise AirflowSetupFailed("airflow was imported before its environment was configured")
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    os.environ.update(airflow_environment(settings))
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = log_level
    try:
        airflow_db.prepare(metadata_db(settings), os.environ.copy())
    except airflow_db.MetadataSetupFailed as error:
        raise AirflowSetupFailed(str(error)) from error
