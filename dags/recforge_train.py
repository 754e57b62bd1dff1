"""recforge_train: warehouse -> backtested candidate models -> MLflow runs and registry -> promotion gate.

Scheduled by the train_cron setting (weekly by default; empty: never by time) and whenever
recforge_drift emits DRIFT.
Every run registers a new version; the gate makes it `champion` or leaves it `challenger`.
Emits CHAMPION, which schedules recforge_publish, only when the gate promoted the new model.
"""

from datetime import timedelta

import pendulum
from airflow.sdk import Metadata, dag, task

from dags.assets import CHAMPION, DRIFT, WAREHOUSE_POOL, asset_or_cron
from pipelines.settings import get_settings

settings = get_settings()


@dag(
    dag_id="recforge_train",
    schedule=asset_or_cron(DRIFT, settings.train_cron),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["recforge", "ml"],
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2), "pool": WAREHOUSE_POOL},
)
def recforge_train():
    """Backtest the candidates, register the best model, and promote it only if it passes the gate."""

    @task
    def train_and_register(ti=None, logical_date=None, triggering_asset_events=None) -> dict:
        """Backtest every candidate, log them to MLflow, register the best and apply the promotion gate.

        The gate's decision and each check with its numbers are written to this task's log; the MLflow
        runs and the model version are tagged with this DAG run and link to this task's page. A run
        DRIFT triggered (the only asset it is scheduled by) re-tunes the candidates' parameters; a
        scheduled one reuses the stored ones until tune_retune_after_days have passed.
        """
        from pipelines.settings import get_settings
        from pipelines.training.train import AirflowRun
        from pipelines.training.train import train_and_register as train

        when = logical_date.isoformat() if logical_date is not None else None  # None for asset-triggered runs
        drift = bool(triggering_asset_events)  # asset events only when DRIFT scheduled this run
        return train(get_settings(), AirflowRun(ti.dag_id, ti.run_id, when, ti.log_url), drift=drift).outcome()

    @task.short_circuit
    def was_promoted(outcome: dict) -> bool:
        """Only a promotion goes on to publication; a rejected challenger stops here, with the reason logged."""
        print(("promoted: " if outcome["promoted"] else "not promoted: ") + outcome["reason"])
        return outcome["promoted"]

    @task(outlets=[CHAMPION])
    def announce_champion(outcome: dict):
        """Emit CHAMPION with the model version and its backtest primary metric, which schedules recforge_publish."""
        yield Metadata(CHAMPION, outcome["champion_metadata"])

    outcome = train_and_register()
    was_promoted(outcome) >> announce_champion(outcome)


recforge_train()
