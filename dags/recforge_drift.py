"""recforge_drift: compare the latest window of events with the baseline of the last retraining.

Scheduled by MARTS (recforge_transform). Emits DRIFT, which schedules recforge_train, only when a
measure crosses its threshold (or no baseline exists yet, so no model has seen the data).
"""

from datetime import timedelta

import pendulum
from airflow.sdk import Metadata, dag, task

from dags.assets import DRIFT, MARTS, WAREHOUSE_POOL


@dag(
    dag_id="recforge_drift",
    schedule=[MARTS],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["recforge", "monitoring"],
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1), "pool": WAREHOUSE_POOL},
)
def recforge_drift():
    """Measure drift, store it, write the report, and ask for retraining when it is above threshold."""

    @task
    def measure_drift() -> dict:
        """Event-type mix, item popularity, user activity, new items and users vs the baseline."""
        from pipelines.monitoring.drift import check_drift, result_as_metadata
        from pipelines.settings import get_settings

        result = check_drift(get_settings())
        return {"retrain": result.retrain, **result_as_metadata(result)}

    @task.short_circuit
    def drifted(outcome: dict) -> bool:
        """Below every threshold the chain stops here and no training is scheduled."""
        return outcome["retrain"]

    @task(outlets=[DRIFT])
    def request_retraining(outcome: dict):
        """Emit DRIFT with the measures, which schedules recforge_train."""
        yield Metadata(DRIFT, {k: v for k, v in outcome.items() if k != "retrain"})

    outcome = measure_drift()
    drifted(outcome) >> request_retraining(outcome)


recforge_drift()
