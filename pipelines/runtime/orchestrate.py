"""`recforge run`: the recforge DAGs as real Airflow DAG runs on the embedded default.

`make run` and the end-to-end test use this. It starts Airflow's own scheduler, DAG processor
and API server (pipelines/runtime/local_airflow.py) on the home's SQLite metadata DB and lets
them execute, in the order production uses:

1. a backfill of recforge_ingest over the landing days (`recforge backfill`'s code path), one run
   per day, while the DAGs downstream stay paused so none of them sees a half-loaded log;
2. then recforge_transform, triggered once, and from there the Asset chain as the scheduler runs
   it: MARTS schedules the drift check, DRIFT (only if drift is measured) schedules training,
   CHAMPION (only if the gate promotes) schedules publication, and PUBLICATION the health check.

The DAGs are given a window of exactly the landing days (RECFORGE_INGEST_START_DATE/END_DATE) and
retrain on drift only and check health after publication only (RECFORGE_TRAIN_CRON and
RECFORGE_HEALTH_CRON empty), so unpausing them schedules no run of their own
by time, and every DAG is left paused again
afterwards, as it was: `recforge ui` shows the runs with their task logs and schedules nothing
until someone unpauses a DAG.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from pipelines.runtime.airflow_home import AirflowSetupFailed, configure_airflow
from pipelines.settings import Settings

INGEST_DAG = "recforge_ingest"
# Each DAG the chain reaches, with the task whose success emits the asset that schedules the next.
CHAIN = (
    ("recforge_transform", "validate_marts"),
    ("recforge_drift", "request_retraining"),
    ("recforge_train", "announce_champion"),
    ("recforge_publish", "publish_lists"),
    ("recforge_health", None),
)
DAG_IDS = (INGEST_DAG, *(dag_id for dag_id, _ in CHAIN))
CHAIN_STOPS = {
    "recforge_drift": "no drift above threshold: no training scheduled, the live publication stays",
    "recforge_train": "training did not promote a new champion: the live publication stays",
}
RUN_CREATED_WITHIN_SECONDS = 180  # an asset event's consumer run appears within a few scheduler loops
FINISHED = {"success", "failed"}


class PipelineRunFailed(AirflowSetupFailed):
    pass


@dataclass
class PipelineRun:
    runs: list[tuple[str, str, str]] = field(default_factory=list)  # dag_id, run_id, state

    def summary(self) -> str:
        per_dag = {dag_id: sum(1 for d, _, s in self.runs if d == dag_id and s == "success") for dag_id in DAG_IDS}
        return "airflow runs succeeded: " + ", ".join(f"{d} x{n}" for d, n in per_dag.items())


def landing_days(settings: Settings) -> list[date]:
    """The landing days to backfill. A day holding only the traffic simulator's files (the demo A/B of an
    earlier run, stamped with the day it ran) is left out: the demo ingested it itself, and a backfill
    from the simulated log's first day to today would ask for every day in between."""
    from pipelines.traffic.run import TRAFFIC_FILE_PREFIX

    events = settings.landing_dir / "events"
    days = sorted(
        date.fromisoformat(p.name.removeprefix("date="))
        for p in events.glob("date=*")
        if any(not f.name.startswith(TRAFFIC_FILE_PREFIX) for f in p.iterdir())
    )
    if not days:
        raise PipelineRunFailed(f"no landing files under {events}: run `recforge simulate` first")
    return days


def dag_window(days: list[date]) -> dict[str, str]:
    """The DAGs as this run's scheduler sees them: ingest over exactly the landing days, training on
    drift only and the health check after publication only (unpausing a DAG with a cron schedule
    starts a run for its latest tick at once)."""
    return {
        "RECFORGE_INGEST_START_DATE": days[0].isoformat(),
        "RECFORGE_INGEST_END_DATE": days[-1].isoformat(),
        "RECFORGE_TRAIN_CRON": "",
        "RECFORGE_HEALTH_CRON": "",
    }


def run_pipeline(settings: Settings, days: list[date] | None = None) -> PipelineRun:
    """Ingest every landing day, then transform, and train and publish if the chain asks for it."""
    from pipelines.runtime.backfill import close_backfill, create_ingest_backfill, register_dags
    from pipelines.runtime.local_airflow import LocalAirflow

    days = days or landing_days(settings)
    window = dag_window(days)
    os.environ.update(window)  # this process reads the DAGs too (the backfill), with the same window
    logging.getLogger("airflow").setLevel(logging.WARNING)  # its import-time INFO lines are not progress
    configure_airflow(settings, "WARNING")
    refuse_a_second_scheduler(settings)
    outcome = PipelineRun()
    print(f"running the recforge DAGs on Airflow's scheduler (metadata DB {settings.airflow_home / 'airflow.db'})")
    started = datetime.now(UTC)
    register_dags()  # parsed with this run's window before anything runs
    missing = set(DAG_IDS) - parsed_since(started)
    if missing:
        raise PipelineRunFailed(f"{sorted(missing)} did not parse: `airflow dags list-import-errors` says why")
    paused_before = paused_states()
    # Created before the scheduler starts, so nothing else holds SQLite's write lock meanwhile.
    backfill = create_ingest_backfill(settings, *landing_interval(days))
    if not backfill.days:
        raise PipelineRunFailed(f"the backfill of {INGEST_DAG} over {days[0]} .. {days[-1]} created no run")
    print(f"  backfill {backfill.backfill_id} of {INGEST_DAG}: {len(backfill.days)} day(s) {days[0]} .. {days[-1]}")
    try:
        with LocalAirflow(settings, extra_environment=window) as airflow:
            wait_for_runs(
                airflow, lambda run: run.backfill_id == backfill.backfill_id, len(backfill.days),
                lambda run: record(outcome, run, f"{run.logical_date:%Y-%m-%d}"),
            )  # fmt: skip
            set_paused([dag_id for dag_id, _ in CHAIN], paused=False)
            run_chain(settings, airflow, outcome)
    finally:  # once the scheduler is gone: nothing else writes the metadata DB then
        close_backfill(backfill.backfill_id)
        set_paused([d for d, paused in paused_before.items() if paused], paused=True)
    print(f"  task logs: {settings.airflow_home / 'logs'} (and in the Airflow UI: make ui)")
    return outcome


def refuse_a_second_scheduler(settings: Settings) -> None:
    """Two schedulers on one SQLite metadata DB fight over it; `recforge ui` must not be running."""
    from airflow.jobs.job import Job
    from airflow.utils.session import create_session
    from sqlalchemy import select

    recent = datetime.now(UTC) - timedelta(seconds=30)
    with create_session() as session:
        alive = session.scalar(
            select(Job.id).where(Job.job_type == "SchedulerJob", Job.state == "running", Job.latest_heartbeat > recent)
        )
    if alive is not None:
        raise PipelineRunFailed(
            f"an Airflow scheduler is already running on {settings.airflow_home} (`recforge ui`?): stop it first; "
            "two schedulers cannot share the embedded SQLite metadata DB"
        )


def parsed_since(moment: datetime) -> set[str]:
    from airflow.models import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(DagModel.dag_id).where(DagModel.dag_id.in_(DAG_IDS), DagModel.last_parsed_time >= moment)
        return set(session.scalars(query))


def landing_interval(days: list[date]) -> tuple[datetime, datetime]:
    """[first landing day, the day after the last): the backfill's range."""
    first = datetime.combine(days[0], datetime.min.time(), tzinfo=UTC)
    return first, first + timedelta(days=(days[-1] - days[0]).days + 1)


def paused_states() -> dict[str, bool]:
    from airflow.models import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(select(DagModel.dag_id, DagModel.is_paused).where(DagModel.dag_id.in_(DAG_IDS)))
        return {dag_id: bool(paused) for dag_id, paused in rows}


def set_paused(dag_ids: list[str], paused: bool) -> None:
    from airflow.models import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import update

    with create_session() as session:
        session.execute(update(DagModel).where(DagModel.dag_id.in_(dag_ids)).values(is_paused=paused))


def run_chain(settings: Settings, airflow, outcome: PipelineRun) -> None:
    """recforge_transform, triggered, then every DAG its assets schedule, until the chain stops."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.models import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType
    from sqlalchemy import func, select
    from sqlalchemy.exc import OperationalError

    with create_session() as session:
        newest = session.scalar(select(func.max(DagRun.id))) or 0
    # One transaction that reads before it writes: SQLite's busy wait does not cover it, so it is
    # retried (it leaves nothing behind when it fails) while the scheduler holds the write lock.
    deadline = time.monotonic() + settings.airflow_db_lock_timeout_seconds
    while True:
        try:
            with create_session() as session:
                trigger_dag("recforge_transform", triggered_by=DagRunTriggeredByType.CLI,
                            triggering_user_name="recforge run", session=session)  # fmt: skip
            break
        except OperationalError as error:
            if "database is locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    for dag_id, emitting_task in CHAIN:
        (dag_run,) = wait_for_runs(
            airflow, lambda run, d=dag_id, after=newest: run.dag_id == d and run.id > after, 1,
            lambda run: record(outcome, run, run.run_type.replace("_", "-")),
        )  # fmt: skip
        newest = dag_run.id
        if emitting_task is not None and not emitted(dag_run, emitting_task):
            print(f"  {CHAIN_STOPS.get(dag_id, dag_id + ' emitted no asset: the chain stops here')}")
            return


@dataclass(frozen=True)
class RunRow:
    """One row of Airflow's dag_run table, read as plain values (no ORM object outlives its session)."""

    id: int
    dag_id: str
    run_id: str
    run_type: str
    state: str
    logical_date: datetime | None
    start_date: datetime | None
    end_date: datetime | None
    backfill_id: int | None


def dag_runs() -> list[RunRow]:
    from airflow.models import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    columns = [getattr(DagRun, name) for name in RunRow.__dataclass_fields__]
    with create_session() as session:
        rows = session.execute(select(*columns).where(DagRun.dag_id.in_(DAG_IDS)).order_by(DagRun.id)).all()
    return [RunRow(*row[:3], _state(row[3]), _state(row[4]), *row[5:]) for row in rows]


def wait_for_runs(
    airflow, matches: Callable[[RunRow], bool], count: int, on_finished: Callable[[RunRow], None]
) -> list[RunRow]:
    """The `count` DAG runs that `matches`, once all finished (each passed to `on_finished` as it ends).

    A failed run raises at once, naming its failed tasks, with the tail of their log.
    """
    appeared_by = time.monotonic() + RUN_CREATED_WITHIN_SECONDS
    reported: set[int] = set()
    while True:
        airflow.raise_if_exited()
        runs = [run for run in dag_runs() if matches(run)]
        for run in runs:
            if run.state in FINISHED and run.id not in reported:
                reported.add(run.id)
                on_finished(run)
                if run.state == "failed":
                    raise PipelineRunFailed(failure_report(run))
        if len(runs) >= count and all(run.state in FINISHED for run in runs):
            return runs
        if not runs and time.monotonic() > appeared_by:
            raise PipelineRunFailed(f"no matching DAG run was created within {RUN_CREATED_WITHIN_SECONDS} s")
        time.sleep(0.5)


def record(outcome: PipelineRun, dag_run, label: str) -> None:
    seconds = (dag_run.end_date - dag_run.start_date).total_seconds() if dag_run.start_date else 0.0
    outcome.runs.append((dag_run.dag_id, dag_run.run_id, dag_run.state))
    print(f"  {dag_run.dag_id:<20} {label:<16} {dag_run.state} ({seconds:.1f} s)", flush=True)


def failure_report(dag_run) -> str:
    """Which tasks failed, and where their logs are, with the tail of the first."""
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        failed = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id,
                TaskInstance.state.in_(["failed", "upstream_failed"]),
            )
        ).all()  # fmt: skip
        names = [ti.task_id for ti in failed]
    base = Path(os.environ["AIRFLOW__LOGGING__BASE_LOG_FOLDER"])
    logs_dir = base / f"dag_id={dag_run.dag_id}" / f"run_id={dag_run.run_id}"
    logs = sorted(logs_dir.glob("task_id=*/attempt=*.log"), key=lambda path: path.stat().st_mtime)
    tail = readable_log_tail(logs[-1]) if logs else "(no task log)"
    return f"{dag_run.dag_id} run {dag_run.run_id} failed; failed task(s): {names}; task logs under {logs_dir}\n{tail}"


def readable_log_tail(path: Path, lines: int = 12) -> str:
    """The last warnings and errors of a task log (JSON lines), as text: the error a user needs first."""
    import json

    shown = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            shown.append(line)
            continue
        if entry.get("level") in ("warning", "error", "critical"):
            errors = entry.get("error_detail") or []
            detail = "; ".join(f"{e.get('exc_type')}: {e.get('exc_value')}" for e in errors)
            shown.append(f"  {entry['level']}: {entry.get('event', '')}" + (f" ({detail})" if detail else ""))
    return "\n".join(shown[-lines:]) or path.read_text()[-2000:]


def emitted(dag_run, task_id: str) -> bool:
    """Did the run's asset-emitting task succeed (rather than being short-circuited)?"""
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        state = session.scalar(
            select(TaskInstance.state).where(
                TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id,
                TaskInstance.task_id == task_id,
            )
        )  # fmt: skip
    return _state(state) == "success"


def _state(state) -> str:
    """Airflow states are str enums in some places and plain strings in others."""
    return str(getattr(state, "value", state))
