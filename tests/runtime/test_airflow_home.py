"""The Airflow side of a home that can move: every path Airflow writes into airflow.cfg is overridden.

Airflow writes ``airflow.cfg`` with absolute paths on its first start. The embedded default's
environment (``airflow_environment``) must override every one of them, or a copied home would read
and write the old location. Airflow runs in subprocesses so the test process never imports it.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from pipelines.runtime.airflow_home import airflow_environment
from tests.conftest import make_settings

# Prints, for every option of airflow.cfg whose written value names `old`, what Airflow now uses.
RESOLVE = """
import configparser, json, os, sys
old = sys.argv[1]
written = configparser.ConfigParser(interpolation=None)
written.read(os.path.join(os.environ["AIRFLOW_HOME"], "airflow.cfg"))
from airflow.configuration import conf
print(json.dumps({f"{s}.{k}": conf.get(s, k) for s in written.sections() for k, v in written[s].items() if old in v}))
"""


def run_with_airflow_env(settings, *command: str) -> str:
    env = {**os.environ, **airflow_environment(settings), "PYTHONPATH": os.getcwd()}
    run = subprocess.run(list(command), env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""


def test_every_path_airflow_writes_into_its_config_follows_a_moved_home(tmp_path):
    original = make_settings(tmp_path / "original" / "home")
    airflow = str(Path(sys.executable).with_name("airflow"))
    run_with_airflow_env(original, airflow, "config", "get-value", "core", "plugins_folder")  # writes airflow.cfg
    written = (original.airflow_home / "airflow.cfg").read_text()
    assert str(original.airflow_home) in written  # Airflow bakes the home in: what the overrides must cover

    moved = tmp_path / "elsewhere" / "home"
    shutil.copytree(original.home, moved)
    shutil.rmtree(tmp_path / "original")
    settings = make_settings(moved)
    resolved = json.loads(run_with_airflow_env(settings, sys.executable, "-c", RESOLVE, str(original.airflow_home)))

    assert {"core.plugins_folder", "database.sql_alchemy_conn", "logging.base_log_folder"} <= set(resolved)
    stale = {key: value for key, value in resolved.items() if str(original.home) in value}
    assert stale == {}, f"not overridden by airflow_environment: {stale}"
    assert resolved["core.dags_folder"] == str(settings.dags_dir)
    assert all(str(settings.home) in value for key, value in resolved.items() if key != "core.dags_folder")
    assert not (tmp_path / "original").exists()
