"""Run the recforge DAGs as real Airflow DAG runs on the embedded default.

`make run` and the end-to-end test use this. Each DAG is executed with Airflow's own
``dag.test()``: a real DagRun with task instances, XComs, logs and asset events in the
metadata DB (SQLite under RECFORGE_HOME/airflow), with tasks run in this process instead
of by a scheduler and workers. The order follows the Asset chain: one ingest run per
landing day, then transform, then the drift check, then training if drift asked for it, and
publication if training promoted a champion: what the scheduler does with the same asset events.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from pipelines.contract import WAREHOUSE_POOL, WAREHOUSE_POOL_DESCRIPTION, WAREHOUSE_POOL_SLOTS
from pipelines.settings import Settings

log = logging.getLogger(__name__)

# `airflow ...` arguments that create the warehouse pool the DAGs run in; every launcher runs them
# after migrating the metadata DB.
CREATE_WAREHOUSE_POOL = ("pools", "set", WAREHOUSE_POOL, str(WAREHOUSE_POOL_SLOTS), WAREHOUSE_POOL_DESCRIPTION)
DAG_IDS = ("recforge_ingest", "recforge_transform", "recforge_drift", "recforge_train", "recforge_publish")


class PipelineRunFailed(RuntimeError):
    pass


@dataclass
class PipelineRun:
    runs: list[tuple[str, str, str]] = field(default_factory=list)  # dag_id, run_id, state

    def summary(self) -> str:
        per_dag = {dag_id: sum(1 for d, _, s in self.runs if d == dag_id and s == "success") for dag_id in DAG_IDS}
        return "airflow runs succeeded: " + ", ".join(f"{d} x{n}" for d, n in per_dag.items())


def airflow_environment(settings: Settings) -> dict[str, str]:
    """The Airflow configuration of the embedded default, as environment variables.

    Airflow writes an ``airflow.cfg`` with absolute paths into AIRFLOW_HOME on first start; every
    one of them is overridden here from the current home, so a copied or moved RECFORGE_HOME never
    reads or writes the old location (tests/runtime/test_orchestrate.py checks the list is complete).
    """
    home = settings.airflow_home
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.dags_dir),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        # One SQLite writer at a time: every process waits its turn instead of "database is locked".
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "pipelines.runtime.backfill.SQLITE_CONNECT_ARGS",
        "RECFORGE_AIRFLOW_DB_LOCK_TIMEOUT_SECONDS": str(settings.airflow_db_lock_timeout_seconds),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__LOGGING__DAG_PROCESSOR_CHILD_PROCESS_LOG_DIRECTORY": str(home / "logs" / "dag_processor"),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        # Task slots sized to the machine (Airflow's default of 32 LocalExecutor workers swamps 2 cores).
        "AIRFLOW__CORE__PARALLELISM": str(os.cpu_count() or 1),
        "RECFORGE_HOME": str(settings.home),
    }


def configure_airflow(settings: Settings, log_level: str = "INFO") -> None:
    """Export the Airflow settings and migrate the metadata DB. Must run before airflow is imported."""
    if "airflow" in sys.modules and os.environ.get("AIRFLOW_HOME") != str(settings.airflow_home):
        raise PipelineRunFailed("airflow was imported before its environment was configured")
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    os.environ.update(airflow_environment(settings))
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = log_level
    if log_level != "INFO":
        # dbt and MLflow print to the console themselves; their full logs stay in their own files.
        os.environ.setdefault("DBT_QUIET", "true")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    airflow = Path(sys.executable).with_name("airflow")
    migrate = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True, env=os.environ.copy())
    if migrate.returncode != 0:
        raise PipelineRunFailed(f"airflow db migrate failed:\n{migrate.stdout[-2000:]}\n{migrate.stderr[-2000:]}")
    pool = subprocess.run(
        [str(airflow), *CREATE_WAREHOUSE_POOL],
        capture_output=True, text=True, env=os.environ.copy(),
    )  # fmt: skip
    if pool.returncode != 0:
        raise PipelineRunFailed(f"airflow pools set failed:\n{pool.stderr[-2000:]}")


def landing_days(settings: Settings) -> list[date]:
    events = settings.landing_dir / "events"
    days = sorted(date.fromisoformat(p.name.removeprefix("date=")) for p in events.glob("date=*"))
    if not days:
        raise PipelineRunFailed(f"no landing files under {events}: run `recforge simulate` first")
    return days


def run_pipeline(settings: Settings, days: list[date] | None = None, verbose: bool = False) -> PipelineRun:
    """Run ingest for every landing day, then transform, train and (if promoted) publish.

    Airflow logs every task line to the console; unless `verbose`, only warnings and errors
    are shown and progress is printed one line per DAG run.
    """
    configure_airflow(settings, "INFO" if verbose else "WARNING")
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(settings.dags_dir))
    if bag.import_errors:
        raise PipelineRunFailed(f"DAG import errors: {bag.import_errors}")
    outcome = PipelineRun()

    def run(dag_id: str, label: str, logical_date: datetime | None = None):
        started = time.perf_counter()
        print(f"  {dag_id:<20} {label:<12} ...", end="", flush=True)
        dag = bag.get_dag(dag_id)
        dag_run = dag.test(logical_date=logical_date) if logical_date else dag.test()
        state = _state(dag_run.state)
        outcome.runs.append((dag_id, dag_run.run_id, state))
        print(f" {state} ({time.perf_counter() - started:.1f} s)", flush=True)
        if state != "success":
            failed = [ti.task_id for ti in dag_run.get_task_instances() if _state(ti.state) == "failed"]
            raise PipelineRunFailed(f"{dag_id} run {dag_run.run_id} ended {state}; failed task(s): {failed}")
        return dag_run

    days = days or landing_days(settings)
    print(f"running the recforge DAGs through Airflow (metadata DB {settings.airflow_home / 'airflow.db'})")
    for day in days:
        # A daily data-interval timetable's manual run covers the day before its logical date.
        midnight = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
        run("recforge_ingest", day.isoformat(), midnight + timedelta(days=1))
    run("recforge_transform", "dbt + GX")
    if not emitted(run("recforge_drift", "drift check"), "request_retraining"):
        print("  no drift above threshold: no training scheduled, the live publication stays")
        return outcome
    if not emitted(run("recforge_train", "train+gate"), "announce_champion"):
        print("  training did not promote a new champion: the live publication stays")
        return outcome
    run("recforge_publish", "publish")
    return outcome


def emitted(dag_run, task_id: str) -> bool:
    """Did the run's asset-emitting task succeed (rather than being short-circuited)?"""
    return any(ti.task_id == task_id and _state(ti.state) == "success" for ti in dag_run.get_task_instances())


def _state(state) -> str:
    """Airflow states are str enums in some places and plain strings in others."""
    return str(getattr(state, "value", state))
