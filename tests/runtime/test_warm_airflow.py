"""The warm scheduler's preload: what DAG tasks import, imported once before Airflow forks, and fork-safe."""

import subprocess
import sys

from pipelines.runtime.warm_airflow import PRELOADED_MODULES

PROBE = """
import sys, threading
from pipelines.runtime.warm_airflow import preload
preload()
missing = [m for m in sys.argv[1:] if m not in sys.modules]
print(threading.active_count(), ",".join(missing))
"""


def test_preloading_imports_every_listed_module_and_starts_no_thread():
    """A thread alive at fork time would be missing in every task process: preload must start none."""
    run = subprocess.run([sys.executable, "-c", PROBE, *PRELOADED_MODULES], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    threads, missing = run.stdout.split()[0], run.stdout.split()[1:]
    assert threads == "1" and missing == []


def test_both_stage_libraries_a_transform_run_imports_are_preloaded():
    """dbt (both transform tasks) and Great Expectations (every checkpoint) cost seconds each to import."""
    assert {"great_expectations", "dbt.cli.main", "pipelines.warehouse.transform"} <= set(PRELOADED_MODULES)
