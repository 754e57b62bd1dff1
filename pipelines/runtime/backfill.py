"""`recforge backfill`: an Airflow backfill of recforge_ingest on the embedded default, done whole or not at all.

`airflow backfill create` against the embedded SQLite metadata DB while `recforge ui` runs failed
with "database is locked": SQLite has one writer at a time, the scheduler and the DAG processor
write all the time, and sqlite3 gives up after 5 s. It also left the half-created backfill behind
(Airflow removes a partial backfill only on PostgreSQL's and MySQL's lock errors), which then
blocks every new one ("Another backfill is running"). Here every embedded Airflow process waits up
to RECFORGE_AIRFLOW_DB_LOCK_TIMEOUT_SECONDS for the lock (SQLITE_CONNECT_ARGS); a creation that
still meets a locked database is deleted with its runs and retried within that time, and one that
fails for good is deleted before the error is raised.

What it does, in order: registers the DAGs in the metadata DB if they are not yet, unpauses
recforge_ingest (a backfill's runs execute only for an unpaused DAG; its consumers are left as
they are, so they react to the backfilled RAW_EVENTS only if they are unpaused), and creates the
backfill's runs, one per landing day in [start, end). The scheduler of `recforge ui` executes them,
one at a time; if it is not running they wait for it. A day whose interval has not ended yet
(today) gets no run: the scheduler's own daily run ingests it when it is complete.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipelines.settings import Settings

INGEST_DAG = "recforge_ingest"
TIMEOUT_VARIABLE = "RECFORGE_AIRFLOW_DB_LOCK_TIMEOUT_SECONDS"
# Read by every embedded Airflow process (AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS names it).
SQLITE_CONNECT_ARGS = {
    "timeout": float(
        os.environ.get(TIMEOUT_VARIABLE) or Settings.model_fields["airflow_db_lock_timeout_seconds"].default
    )
}


class BackfillFailed(RuntimeError):
    pass


@dataclass
class BackfillCreated:
    backfill_id: int
    days: list[str]  # the logical dates of the runs, YYYY-MM-DD

    def summary(self) -> str:
        if not self.days:
            return "no run to create"
        return (
            f"backfill {self.backfill_id} of {INGEST_DAG}: {len(self.days)} run(s), {self.days[0]} .. {self.days[-1]}; "
            "the scheduler of `recforge ui` runs them one at a time"
        )


def create_backfill(settings: Settings, start: datetime, end: datetime) -> BackfillCreated:
    """Create a backfill of recforge_ingest over the landing days [start, end) (see the module doc)."""
    from pipelines.runtime.airflow_home import configure_airflow

    if end <= start:
        raise BackfillFailed(f"--end {end:%Y-%m-%d} must be after --start {start:%Y-%m-%d}")
    configure_airflow(settings, "WARNING")
    return create_ingest_backfill(settings, start, end)


def create_ingest_backfill(settings: Settings, start: datetime, end: datetime) -> BackfillCreated:
    """`create_backfill` in a process whose Airflow environment is configured already (`recforge run`)."""
    from airflow.models import DagModel, DagRun
    from airflow.models.backfill import Backfill, BackfillDagRun, ReprocessBehavior, _create_backfill
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.utils.session import create_session
    from sqlalchemy import delete, select, update

    with create_session() as session:
        registered = session.scalar(select(SerializedDagModel.dag_id).where(SerializedDagModel.dag_id == INGEST_DAG))
    if registered is None:  # a fresh home: neither `recforge run` nor the UI's DAG processor has parsed the DAGs
        register_dags()
    with create_session() as session:  # an UPDATE first, not a read: SQLite's busy wait covers it
        unpaused = session.execute(update(DagModel).where(DagModel.dag_id == INGEST_DAG).values(is_paused=False))
        if unpaused.rowcount != 1:
            raise BackfillFailed(f"{INGEST_DAG} is not in the metadata DB {settings.airflow_home / 'airflow.db'}")
    with create_session() as session:
        before = session.scalar(select(Backfill.id).order_by(Backfill.id.desc()).limit(1)) or 0

    last = end - timedelta(days=1)
    if last.date() >= datetime.now(UTC).date():
        print(f"  {last:%Y-%m-%d}'s interval has not ended: its daily run ingests it, not the backfill")

    def undo() -> None:  # never leave a half-created backfill: it would block the next one
        partial = select(Backfill.id).where(Backfill.id > before, Backfill.dag_id == INGEST_DAG)
        with create_session() as session:  # statements that write first: SQLite's busy wait covers them
            session.execute(delete(BackfillDagRun).where(BackfillDagRun.backfill_id.in_(partial)))
            session.execute(delete(DagRun).where(DagRun.backfill_id.in_(partial)))
            session.execute(delete(Backfill).where(Backfill.id.in_(partial)))

    # SQLite's busy wait does not cover a transaction that read before it writes (it would deadlock):
    # such a write fails at once while another process writes, so the whole creation is retried.
    deadline, attempts = time.monotonic() + settings.airflow_db_lock_timeout_seconds, 0
    while True:
        attempts += 1
        try:
            backfill = _create_backfill(
                dag_id=INGEST_DAG, from_date=start, to_date=last, max_active_runs=1, reverse=False,
                dag_run_conf=None, triggering_user_name="recforge", reprocess_behavior=ReprocessBehavior.COMPLETED,
            )  # fmt: skip
            break
        except Exception as error:
            if type(error).__name__ == "NoBackfillRunsToCreate":
                return BackfillCreated(backfill_id=0, days=[])
            undo()
            if "database is locked" in str(error) and time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            raise BackfillFailed(
                f"creating the backfill of {INGEST_DAG} in {settings.airflow_home / 'airflow.db'} failed and was "
                f"undone ({attempts} attempt(s)): {type(error).__name__}: {str(error).splitlines()[0]}"
            ) from error
    with create_session() as session:
        dates = session.scalars(
            select(DagRun.logical_date).where(DagRun.backfill_id == backfill.id).order_by(DagRun.logical_date)
        )
        return BackfillCreated(backfill_id=backfill.id, days=[f"{d:%Y-%m-%d}" for d in dates])


def register_dags() -> None:
    """`airflow dags reserialize`: a backfill needs the DAG's serialized form, which a fresh home lacks."""
    airflow = Path(sys.executable).with_name("airflow")
    done = subprocess.run([str(airflow), "dags", "reserialize"], capture_output=True, text=True, env=os.environ.copy())
    if done.returncode != 0:
        raise BackfillFailed(f"airflow dags reserialize failed:\n{done.stderr[-2000:]}")


def close_backfill(backfill_id: int) -> None:
    """Mark a backfill complete now, as the scheduler would at its next 30-second check.

    `recforge run` stops its scheduler as soon as the chain ends, often before that check; a
    backfill left open would refuse the next one ("Another backfill is running"). Runs it left
    unfinished (an interrupted `recforge run`) are marked failed, so the Airflow UI says what
    happened and the next backfill over those days reprocesses them.
    """
    from airflow.models import DagRun
    from airflow.models.backfill import Backfill
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import update

    unfinished = (DagRunState.QUEUED, DagRunState.RUNNING)
    with create_session() as session:  # statements that write first: SQLite's busy wait covers them
        session.execute(
            update(DagRun)
            .where(DagRun.backfill_id == backfill_id, DagRun.state.in_(unfinished))
            .values(state=DagRunState.FAILED)
        )
        session.execute(
            update(Backfill)
            .where(Backfill.id == backfill_id, Backfill.completed_at.is_(None))
            .values(completed_at=datetime.now(UTC))
        )
