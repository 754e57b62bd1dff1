"""`recforge run` when something is wrong: a task fails, or another scheduler owns the home.

Apart from tests/e2e/test_e2e.py so that the two run on different test workers.
"""

import os
import re
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from tests.conftest import TINY, run_recforge

pytestmark = pytest.mark.e2e


def test_a_failing_task_fails_the_run_naming_it_and_leaves_the_home_ready_for_the_next(tmp_path):
    """Two simulated days cannot fill the marts' train/valid/test splits: the marts checkpoint fails."""
    home = tmp_path / "home"
    run = run_recforge(home, "run", values={**TINY, "sim_days": 2})
    assert run.returncode == 1, run.stdout[-3000:]
    failed = r"recforge run: error: (recforge_\w+) run \S+ failed; failed task\(s\): \['(\w+)'\]"
    message = re.search(failed, run.stderr)
    assert message, run.stderr[-3000:]
    assert message.groups() == ("recforge_transform", "validate_marts")
    assert "task logs under " in run.stderr and "critical failures: marts_splits" in run.stderr
    with sqlite3.connect(home / "airflow" / "airflow.db") as con:
        assert con.execute("select count(*) from backfill where completed_at is null").fetchone()[0] == 0
        assert set(dict(con.execute("select dag_id, is_paused from dag")).values()) == {1}


def test_a_second_scheduler_on_the_same_home_is_refused(tmp_path):
    """`make run` while `make ui` runs: two schedulers cannot share the SQLite metadata DB."""
    home = tmp_path / "home"
    day = home / "landing" / "events" / "date=2026-01-01"
    day.mkdir(parents=True)
    (day / "events.jsonl").write_text("")  # a landing day to run, so the run gets as far as the scheduler check
    env = {**os.environ, "RECFORGE_HOME": str(home), "RECFORGE_SERVE": "0"}
    setup = (
        "from pipelines.runtime.airflow_home import configure_airflow\nfrom pipelines.settings import get_settings\n"
    )
    subprocess.run([sys.executable, "-c", f"{setup}configure_airflow(get_settings())"], env=env, check=True)
    with sqlite3.connect(home / "airflow" / "airflow.db") as con:  # what a live scheduler keeps writing
        con.execute(
            "insert into job (state, job_type, start_date, latest_heartbeat, hostname, unixname) "
            "values ('running', 'SchedulerJob', ?, ?, 'localhost', 'recforge')",
            (datetime.now(UTC).replace(tzinfo=None).isoformat(" "),) * 2,
        )
    run = run_recforge(home, "run", values={}, timeout=300)
    assert run.returncode == 1
    assert "an Airflow scheduler is already running on " in run.stderr and "stop it first" in run.stderr
    assert not (home / "run-logs").exists()  # refused before starting anything
