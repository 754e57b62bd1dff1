"""recforge_experiment_readout: every running experiment read out once a day (pipelines/experiments/daily.py).

Reads the slate-item mart the warehouse builds from the impressions and outcome events, and writes each
experiment's page (reports/experiments/<name>.html, linked from reports/index.html). A readout covers
the experiment from its start to the end of the data interval, so a retry or a backfill of a day writes
the same page; its always-valid p-values make the daily look safe. A sample-ratio mismatch fails the
task, naming the experiment, after every page is written.
"""

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

from dags.assets import WAREHOUSE_POOL
from pipelines.settings import get_settings

settings = get_settings()


@dag(
    dag_id="recforge_experiment_readout",
    schedule=settings.experiment_readout_cron or None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["recforge", "experiments"],
    default_args={"retries": 1, "retry_delay": timedelta(minutes=5), "pool": WAREHOUSE_POOL},
)
def recforge_experiment_readout():
    """Read out the running experiments up to the end of the data interval."""

    @task
    def read_out_running_experiments(data_interval_end=None) -> dict:
        """One readout per running experiment: decision (ship, stop, keep running) and its page."""
        from pipelines.experiments.daily import read_out_running

        return read_out_running(get_settings(), data_interval_end)

    read_out_running_experiments()


recforge_experiment_readout()
