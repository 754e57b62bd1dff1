"""recforge_publish: champion model -> per-user lists + FAISS index -> atomic CURRENT switch.

Scheduled by CHAMPION (recforge_train). Feeds PUBLICATION, which the serving module picks up
by watching CURRENT.
"""

from datetime import timedelta

import pendulum
from airflow.sdk import Metadata, dag, task

from dags.assets import CHAMPION, PUBLICATION, WAREHOUSE_POOL


@dag(
    dag_id="recforge_publish",
    schedule=[CHAMPION],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["recforge", "serving"],
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1), "pool": WAREHOUSE_POOL},
)
def recforge_publish():
    """Score the champion for every known user and make the publication live."""

    @task(outlets=[PUBLICATION])
    def publish_lists():
        """Write published/<version>/ completely, then switch CURRENT to it."""
        from pipelines.publication.publish import publish
        from pipelines.settings import get_settings

        result = publish(get_settings())
        yield Metadata(PUBLICATION, {"version": result.version, "users": result.users})

    publish_lists()


recforge_publish()
