"""recforge_forget: forget users in every store, then prove it and write the audit (triggered by hand).

Trigger with a file of ids on the workers' disk, outside RECFORGE_HOME, ``{"ids_file": "/path/ids.txt"}``
(one per line), or with the ids themselves, ``{"user_ids": ["u000754"]}``. Airflow stores a run's
conf in its metadata database and keeps writing the run while it lasts, so ids given in conf stay
there (under RECFORGE_HOME/airflow in the embedded default): ``finish`` then fails naming that
database, and the way out is ``airflow dags delete recforge_forget`` and ``recforge forget`` for the
same ids, which redacts and verifies. ``ids_file`` leaves Airflow nothing to keep. One task per store group of
``pipelines/privacy/forget.py`` (the deny list first, so serving stops at once), then ``finish``:
the search of the whole home and the audit. Feeds PUBLICATION (the version without the users).
"""

from datetime import timedelta

import pendulum
from airflow.sdk import dag, get_current_context, task

from dags.assets import PUBLICATION, WAREHOUSE_POOL


def _request() -> tuple[list[str], str]:
    """The run's ids (from conf) and its request id (the DAG run's id, so a retried task joins its request)."""
    from pipelines.privacy.forget import ForgetError, read_id_file

    context = get_current_context()
    conf = context["dag_run"].conf or {}
    ids = list(conf.get("user_ids") or [])
    if conf.get("ids_file"):
        ids += read_id_file(conf["ids_file"])
    if not ids:
        raise ForgetError('no ids: trigger with conf {"user_ids": [...]} or {"ids_file": "/path"}')
    request_id = "".join(c if c.isalnum() or c in "-_" else "_" for c in context["dag_run"].run_id)
    return ids, request_id


def _group(name: str) -> None:
    from pipelines.privacy.forget import run_group
    from pipelines.settings import get_settings

    ids, request_id = _request()
    run_group(get_settings(), ids, request_id, name)


@dag(
    dag_id="recforge_forget",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["recforge", "privacy"],
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1), "pool": WAREHOUSE_POOL},
)
def recforge_forget():
    """Forget the users of the run's conf everywhere; the audit keeps keyed hashes, never the ids."""

    @task
    def serving_deny_list():
        """Serving answers the users with the fallback from its next look at published/denylist.txt."""
        _group("serving_deny_list")

    @task
    def landing():
        """Cut the users' rows out of every landing file."""
        _group("landing")

    @task
    def warehouse():
        """Raw events, quarantine, batches, user tables, drift baseline; dbt full refresh; compaction."""
        _group("warehouse")

    @task
    def models():
        """Remove the users' rows from every saved model bundle; tag the registry versions."""
        _group("models")

    @task(outlets=[PUBLICATION])
    def publications():
        """Make a version without the users live; rewrite older kept versions."""
        _group("publications")

    @task
    def reports_and_logs():
        """Redact the ids from any other file (reports, logs, SQLite databases)."""
        _group("reports_and_logs")

    @task
    def finish():
        """Search every file under the home for the ids (fails naming any file), then write the audit.

        A search that finds the ids fails the run at once: a retry of this task alone would search the
        same files again (the store tasks are not re-run), so it cannot turn out differently.
        """
        from airflow.sdk.exceptions import AirflowFailException

        from pipelines.privacy.forget import ForgetError, finish_request
        from pipelines.settings import get_settings

        ids, request_id = _request()
        try:
            return finish_request(get_settings(), ids, request_id).summary()
        except ForgetError as error:
            if get_current_context()["dag_run"].conf.get("user_ids"):
                raise AirflowFailException(
                    f"{error}. The ids came in this run's conf, which Airflow keeps in its metadata database: "
                    "delete the run (airflow dags delete recforge_forget), then run `recforge forget` for the same "
                    'ids; trigger with {"ids_file": "/path outside RECFORGE_HOME"} to avoid it'
                ) from None
            raise AirflowFailException(str(error)) from error

    serving_deny_list() >> landing() >> warehouse() >> models() >> publications() >> reports_and_logs() >> finish()


recforge_forget()
