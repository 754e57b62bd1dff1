"""End to end: `recforge run` drives every DAG through Airflow on a tiny simulated log,
then the API (in-process) answers with exactly what was published.
"""

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from pipelines.publication.publish import current_version
from pipelines.training.tracking import CHAMPION, configure, version_by_alias
from pipelines.warehouse.connection import connect
from serving.config import ServingSettings
from serving.main import create_app
from tests.conftest import CHROMIUM_FLAGS, TINY, make_settings, run_recforge, screenshot

pytestmark = pytest.mark.e2e


def recforge_run(home: Path, **values) -> str:
    run = run_recforge(home, "run", values={**TINY, **values})
    assert run.returncode == 0, f"recforge run failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    return run.stdout


@pytest.fixture(scope="module")
def pipeline_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("e2e") / "home"
    out = recforge_run(home)
    assert "sample user" in out and "Airflow UI" in out and "MLflow UI" in out and "reports:" in out
    return home


@pytest.fixture(scope="module")
def rerun_output(pipeline_home) -> str:
    """The same pipeline again over the same days: nothing changed, so no drift and no training.

    Without the demo A/B: the first run has shown it, and it runs on a scratch copy of the home
    (pipelines/runtime/ab_demo.py), so it could not change what this test looks at.
    """
    return recforge_run(pipeline_home, demo_experiment=False)


def test_airflow_metadata_holds_successful_runs_of_every_dag(pipeline_home):
    with sqlite3.connect(pipeline_home / "airflow" / "airflow.db") as con:
        runs = dict(con.execute("select dag_id, count(*) from dag_run where state = 'success' group by dag_id"))
        failed = con.execute("select count(*) from dag_run where state != 'success'").fetchone()[0]
    assert runs == {
        "recforge_ingest": TINY["sim_days"],
        "recforge_transform": 1,
        "recforge_drift": 1,
        "recforge_train": 1,
        "recforge_publish": 1,
        "recforge_health": 1,
    }
    assert failed == 0


def test_the_runs_are_the_schedulers_own_with_task_logs_and_real_times(pipeline_home):
    """What `make ui` shows of a `make run`: the scheduler's runs (not `dag.test()`'s), every task's
    log on disk where the UI reads it, the gate's decision in the train task's log, real durations,
    the backfill closed and every DAG paused again."""
    with sqlite3.connect(pipeline_home / "airflow" / "airflow.db") as con:
        kinds = set(con.execute("select dag_id, run_type, triggered_by from dag_run"))
        runs = con.execute("select start_date, end_date from dag_run").fetchall()
        tasks = con.execute("select dag_id, run_id, task_id, try_number, state from task_instance").fetchall()
        open_backfills = con.execute("select count(*) from backfill where completed_at is null").fetchone()[0]
        paused = dict(con.execute("select dag_id, is_paused from dag"))
    assert kinds == {
        ("recforge_ingest", "backfill", "BACKFILL"),
        ("recforge_transform", "manual", "CLI"),
        ("recforge_drift", "asset_triggered", "ASSET"),
        ("recforge_train", "asset_triggered", "ASSET"),
        ("recforge_publish", "asset_triggered", "ASSET"),
        ("recforge_health", "asset_triggered", "ASSET"),
    }
    for start, end in runs:
        seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
        assert 0 < seconds < 600, (start, end)
    logs = pipeline_home / "airflow" / "logs"
    for dag_id, run_id, task_id, try_number, state in tasks:
        if state == "success":
            log = logs / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}" / f"attempt={try_number}.log"
            assert log.exists() and log.stat().st_size > 0, log
    (train_log,) = logs.glob("dag_id=recforge_train/run_id=*/task_id=train_and_register/attempt=1.log")
    assert "promoted to champion" in train_log.read_text()
    assert open_backfills == 0  # the next `recforge run` or `recforge backfill` is not blocked
    assert set(paused.values()) == {1}


def test_mlflow_holds_the_runs_and_a_champion(pipeline_home):
    settings = make_settings(pipeline_home)
    client = configure(settings)
    champion = version_by_alias(client, settings.registered_model_name, CHAMPION)
    assert champion is not None
    experiment = client.get_experiment_by_name(settings.mlflow_experiment)
    assert len(client.search_runs([experiment.experiment_id])) >= 3  # parent + popularity + als


def test_the_api_serves_what_was_published(pipeline_home):
    settings = make_settings(pipeline_home)
    version = current_version(settings.published_dir)
    live = settings.published_dir / version
    manifest = json.loads((live / "manifest.json").read_text())
    recs = pd.read_parquet(live / "user_recs.parquet")
    assert manifest["counts"]["user_rows"] == len(recs)
    with TestClient(create_app(ServingSettings(home=pipeline_home))) as client:
        deadline = time.monotonic() + 30  # the first publication loads in the background
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        ready = client.get("/readyz").json()
        assert (ready["ready"], ready["version"], ready["users"]) == (True, version, recs["user_id"].nunique())
        for user in recs["user_id"].drop_duplicates().sample(5, random_state=0):
            body = client.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
            expected = recs[recs["user_id"] == user].sort_values("rank")["item_id"].head(10).tolist()
            assert [item["item_id"] for item in body["items"]] == expected
            assert len(set(expected)) == len(expected) == 10
            assert body["version"] == version and body["fallback"] is False


def test_a_rerun_without_drift_does_not_retrain_and_changes_no_data(pipeline_home, rerun_output):
    assert "no drift above threshold" in rerun_output
    with sqlite3.connect(pipeline_home / "airflow" / "airflow.db") as con:
        runs = dict(con.execute("select dag_id, count(*) from dag_run where state = 'success' group by dag_id"))
        events = dict(
            con.execute("select a.uri, count(*) from asset_event e join asset a on a.id = e.asset_id group by a.uri")
        )
    assert runs["recforge_drift"] == 2 and runs["recforge_train"] == 1 and runs["recforge_publish"] == 1
    assert events["recforge://monitoring/drift"] == 1
    assert events["recforge://registry/recforge-recommender/champion"] == 1
    with connect(make_settings(pipeline_home)) as con:
        batches = con.execute("select count(*), sum(rows_input) from raw.batches").fetchone()
    assert batches[0] == TINY["sim_days"]


def test_the_reports_index_renders_in_chromium_and_every_link_resolves(pipeline_home, chromium, tmp_path):
    index = pipeline_home / "reports" / "index.html"
    links = re.findall(r"href='([^']+)'", index.read_text())
    targets = {link for link in links if not link.startswith(("http:", "https:"))}
    assert any(t.startswith("data_docs/validations/") for t in targets)
    assert {"data_docs/index.html", "drift/latest.html", "evaluation/latest.html", "dbt_docs/index.html"} <= targets
    for target in targets:
        assert (index.parent / target).exists(), f"broken link in reports/index.html: {target}"

    picture = tmp_path / "reports-index.png"
    shot = screenshot(chromium, index.as_uri(), picture)
    assert shot.returncode == 0 and picture.stat().st_size > 10_000, shot.stderr[-2000:]

    expected_text = {
        "index.html": "recforge reports",
        "drift/latest.html": "recforge drift report",
        "evaluation/latest.html": "recforge evaluation report",
        "dbt_docs/index.html": "dbt",
    }
    expected_text.update(
        {t: "Expectation Validation Result" for t in targets if t.startswith("data_docs/validations/")}
    )
    for target, text in expected_text.items():
        dom = subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}", "--dump-dom",
             (index.parent / target).as_uri()],
            capture_output=True, text=True, timeout=120,
        ).stdout  # fmt: skip
        assert text in dom, f"{target} did not render (no {text!r} in its DOM)"


def recforge_backfill(home: Path, *args: str, script: str = "", **env: str) -> subprocess.CompletedProcess:
    """`recforge backfill ARGS` on `home` (with `script` run first in the same process, after Airflow's setup)."""
    setup = (
        "from pipelines.runtime.airflow_home import configure_airflow\nfrom pipelines.settings import get_settings\n"
        f"configure_airflow(get_settings(), 'WARNING')\n{script}\n"
    )
    code = "import sys\nfrom pipelines.cli import main\n" + (setup if script else "")
    code += "sys.exit(main(['backfill', *sys.argv[1:]]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], env={**os.environ, "RECFORGE_HOME": str(home), **env},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def airflow_copy(pipeline_home: Path, tmp_path: Path) -> Path:
    """A home holding a copy of the pipeline's Airflow metadata DB (what `make ui` would serve)."""
    home = tmp_path / "home"
    shutil.copytree(pipeline_home / "airflow", home / "airflow")
    return home


def newest_backfill(home: Path) -> int:
    with sqlite3.connect(home / "airflow" / "airflow.db") as con:
        return con.execute("select coalesce(max(id), 0) from backfill").fetchone()[0]


def backfill_runs(home: Path, after_backfill: int) -> list[tuple]:
    """The runs of the backfills newer than backfill `after_backfill` (`recforge run` makes one per run)."""
    with sqlite3.connect(home / "airflow" / "airflow.db") as con:
        return con.execute(
            "select substr(logical_date, 1, 10), run_type, state from dag_run where backfill_id > ?"
            " order by logical_date",
            (after_backfill,),
        ).fetchall()


def test_a_backfill_waits_for_the_busy_metadata_db_and_leaves_today_to_the_daily_run(pipeline_home, tmp_path):
    """What `make ui`'s scheduler does to SQLite (hold the write lock for seconds at a time) made
    `airflow backfill create` fail with "database is locked"; `recforge backfill` waits its turn."""
    home = airflow_copy(pipeline_home, tmp_path)
    database = home / "airflow" / "airflow.db"
    before = newest_backfill(home)
    busy, done = threading.Event(), threading.Event()

    def scheduler_like_writer():
        con = sqlite3.connect(database, isolation_level=None)
        while not done.is_set():
            con.execute("begin immediate")  # the write lock, longer than sqlite3's default 5 s wait
            busy.set()
            done.wait(6)
            con.execute("rollback")
            time.sleep(1)
        con.close()

    writer = threading.Thread(target=scheduler_like_writer)
    writer.start()
    busy.wait(10)
    today = datetime.now(UTC).date()
    try:
        out = recforge_backfill(
            home, "--start", f"{today - timedelta(days=2)}", "--end", f"{today + timedelta(days=1)}"
        )
    finally:
        done.set()
        writer.join()
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"{today}'s interval has not ended" in out.stdout
    assert "2 run(s)" in out.stdout
    assert backfill_runs(home, before) == [
        (f"{today - timedelta(days=2)}", "backfill", "queued"),
        (f"{today - timedelta(days=1)}", "backfill", "queued"),
    ]
    with sqlite3.connect(database) as con:
        paused = dict(con.execute("select dag_id, is_paused from dag"))
    assert paused == {"recforge_ingest": 0, **{d: 1 for d in paused if d != "recforge_ingest"}}


def test_a_backfill_that_fails_half_way_is_undone_and_named(pipeline_home, tmp_path):
    home = airflow_copy(pipeline_home, tmp_path)
    before = newest_backfill(home)
    fail_after_the_backfill_row = (
        "import sqlite3, sqlalchemy.exc, airflow.models.backfill as b\n"
        "def locked(**kwargs):\n"
        "    raise sqlalchemy.exc.OperationalError('insert', {}, sqlite3.OperationalError('database is locked'))\n"
        "b._create_runs_non_partitioned = locked"
    )
    out = recforge_backfill(
        home, "--start", "2026-01-02", "--end", "2026-01-05", script=fail_after_the_backfill_row,
        RECFORGE_AIRFLOW_DB_LOCK_TIMEOUT_SECONDS="2",
    )  # fmt: skip
    assert out.returncode == 1
    assert "recforge backfill: error: creating the backfill of recforge_ingest in " in out.stderr
    assert re.search(r"failed and was undone \(\d+ attempt\(s\)\): OperationalError: .*database is locked", out.stderr)
    assert newest_backfill(home) == before  # the next backfill is not blocked
    assert backfill_runs(home, before) == []


def test_a_backfill_needs_an_end_after_its_start(tmp_path):
    out = recforge_backfill(tmp_path / "home", "--start", "2026-01-05", "--end", "2026-01-05")
    assert out.returncode == 1
    assert "recforge backfill: error: --end 2026-01-05 must be after --start 2026-01-05" in out.stderr
    assert not (tmp_path / "home" / "airflow" / "airflow.db").exists()  # refused before touching Airflow
