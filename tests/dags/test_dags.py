"""DAG integrity: the DagBag loads without errors and the Asset chain is wired as documented.

Airflow is loaded in a subprocess with its own AIRFLOW_HOME, so the test process never
picks up (or writes) a user's Airflow configuration.
"""

import json
import os
import subprocess
import sys

from pipelines.runtime.airflow_home import airflow_environment
from tests.conftest import make_settings

INSPECT = """
import json
from airflow.dag_processing.dagbag import DagBag
from pipelines.settings import get_settings
bag = DagBag(str(get_settings().dags_dir))
dags = {}
for dag_id, dag in bag.dags.items():
    outlets = sorted({o.uri for t in dag.tasks for o in t.outlets})
    condition = getattr(dag.timetable, "asset_condition", None)
    assets = getattr(condition, "objects", [condition])
    schedule = sorted(a.uri for a in assets) if condition is not None else type(dag.timetable).__name__
    dags[dag_id] = {"outlets": outlets, "schedule": schedule, "tags": sorted(dag.tags),
                    "timetable": type(dag.timetable).__name__,
                    "retries": dag.default_args.get("retries"), "catchup": dag.catchup,
                    "documented": bool(dag.doc_md or dag.description),
                    "watchers": [[w.name, w.trigger.serialize()[0]] for a in (assets if condition is not None else [])
                                 for w in getattr(a, "watchers", [])]}
print(json.dumps({"errors": {k: v for k, v in bag.import_errors.items()}, "dags": dags}))
"""


def load_dags(tmp_path, **environment: str) -> dict:
    settings = make_settings(tmp_path / "home")
    env = {**os.environ, **airflow_environment(settings), **environment}
    out = subprocess.run([sys.executable, "-c", INSPECT], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_dagbag_loads_without_import_errors_and_chains_by_assets(tmp_path):
    loaded = load_dags(tmp_path)
    assert loaded["errors"] == {}
    dags = loaded["dags"]
    assert set(dags) == {
        "recforge_ingest",
        "recforge_transform",
        "recforge_drift",
        "recforge_train",
        "recforge_publish",
        "recforge_health",
        "recforge_experiment_readout",
        "recforge_stream_ingest",
        "recforge_forget",
        "recforge_retention",
    }
    raw, marts, drift, champion, publication = (
        "recforge://warehouse/raw/events",
        "recforge://warehouse/marts",
        "recforge://monitoring/drift",
        "recforge://registry/recforge-recommender/champion",
        "recforge://published/current",
    )
    assert dags["recforge_ingest"]["schedule"] == "CronDataIntervalTimetable"
    assert dags["recforge_ingest"]["outlets"] == [raw]
    # Micro-batches feed the same raw tables and announce them with the same asset, every few minutes.
    assert dags["recforge_stream_ingest"]["timetable"] == "CronTriggerTimetable"
    assert dags["recforge_stream_ingest"]["outlets"] == [raw]
    assert dags["recforge_transform"]["schedule"] == [raw] and dags["recforge_transform"]["outlets"] == [marts]
    assert dags["recforge_drift"]["schedule"] == [marts] and dags["recforge_drift"]["outlets"] == [drift]
    assert dags["recforge_train"]["schedule"] == [drift] and dags["recforge_train"]["outlets"] == [champion]
    assert dags["recforge_train"]["timetable"] == "AssetOrTimeSchedule"  # weekly, and on drift
    assert dags["recforge_publish"]["schedule"] == [champion] and dags["recforge_publish"]["outlets"] == [publication]
    assert dags["recforge_health"]["schedule"] == [publication] and dags["recforge_health"]["outlets"] == []
    assert dags["recforge_health"]["timetable"] == "AssetOrTimeSchedule"  # daily, and after each publication
    assert dags["recforge_forget"]["timetable"] == "NullTimetable" and dags["recforge_forget"]["outlets"] == [
        publication
    ]
    assert dags["recforge_retention"]["outlets"] == []  # daily; feeds nothing (derived data changes at training)
    for dag in dags.values():
        assert dag["catchup"] is False and dag["retries"] >= 1 and "recforge" in dag["tags"] and dag["documented"]


def test_with_the_redis_collector_micro_batches_are_scheduled_by_the_stream_itself(tmp_path):
    loaded = load_dags(tmp_path, RECFORGE_COLLECTOR_BACKEND="redis")
    assert loaded["errors"] == {}
    stream = loaded["dags"]["recforge_stream_ingest"]
    assert stream["schedule"] == ["recforge://collector/event-stream"]
    assert stream["timetable"] == "AssetTriggeredTimetable"
    assert stream["watchers"] == [["recforge_event_stream", "pipelines.ingest.stream_trigger.RedisStreamTrigger"]]


def test_an_empty_train_cron_retrains_on_drift_only(tmp_path):
    """What `recforge run` gives its scheduler: unpausing recforge_train then starts no run by time."""
    dags = load_dags(tmp_path, RECFORGE_TRAIN_CRON="")["dags"]
    assert dags["recforge_train"]["schedule"] == ["recforge://monitoring/drift"]
    assert dags["recforge_train"]["timetable"] == "AssetTriggeredTimetable"


def test_an_invalid_setting_shows_as_the_dag_files_import_error_with_the_clis_line(tmp_path):
    """The DagBag (so the UI's import errors) shows the same line the CLI prints."""
    settings = make_settings(tmp_path / "home")
    env = {**os.environ, **airflow_environment(settings), "RECFORGE_LATE_ARRIVAL_DAYS": "-5"}
    script = (
        "import json; from airflow.dag_processing.dagbag import DagBag; "
        f"bag = DagBag({str(settings.dags_dir / 'recforge_ingest.py')!r}); "
        "print(json.dumps(bag.import_errors))"
    )
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    errors = json.loads(out.stdout.strip().splitlines()[-1])
    (error,) = errors.values()
    assert "InvalidSettings: invalid setting: RECFORGE_LATE_ARRIVAL_DAYS='-5': must be an integer in [0, 3650]" in error
