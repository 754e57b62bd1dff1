"""The scaled-out configuration on one machine, without Docker.

The same processes docker-compose.yml runs, started directly: Airflow's api-server,
scheduler, dag-processor, triggerer and a Celery worker with the metadata DB on PostgreSQL
and the Celery broker on Redis, plus an MLflow tracking server backed by PostgreSQL. Only
settings differ from the embedded default: the DAGs, pipelines and dbt project are the same.

``recforge scaled-up`` (``make up-scaled``) runs it in the foreground; the integration tests
start and stop it around a pipeline run.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.runtime import airflow_db
from pipelines.runtime.airflow_home import airflow_environment, api_health_url
from pipelines.runtime.mlflow_server import MLFLOW_SERVER_ENVIRONMENT
from pipelines.runtime.processes import ProcessGroup, spawn, wait_until_answering
from pipelines.settings import Settings

BIN = Path(sys.executable).parent
CELERY_CONFIG_OPTIONS = "pipelines.runtime.celery_config.CELERY_CONFIG"  # warm workers (see that module)


@dataclass
class ScaledStack(ProcessGroup):
    settings: Settings
    airflow_database: str
    mlflow_database: str
    redis_url: str
    api_port: int = 8080
    mlflow_port: int = 5000
    worker_concurrency: int = 2
    log_server_port: int = 8793
    jwt_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    # Airflow settings laid over the stack's own, e.g. local_airflow.RESPONSIVE_SCHEDULING where a run
    # of many short tasks would otherwise wait on the scheduler's one-second idle sleep between them.
    extra_environment: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def _pg_url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        s = self.settings
        password = f":{s.pg_password}" if s.pg_password else ""
        return f"{driver}://{s.pg_user}{password}@{s.pg_host}:{s.pg_port}/{database}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def logs_dir(self) -> Path:
        return self.settings.home / "scaled-logs"

    def environment(self) -> dict[str, str]:
        """Everything the processes read: the embedded default's Airflow settings with the scaled URLs."""
        # RECFORGE_* come from the settings object alone, so a stray variable cannot contradict it.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("RECFORGE_")}
        env = {**inherited, **self.settings.to_environment(), **airflow_environment(self.settings)}
        # The embedded default's SQLite lock wait (a `timeout` connect argument) means nothing to psycopg2.
        env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS")
        env.update(
            {
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self._pg_url(self.airflow_database),
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CELERY__BROKER_URL": self.redis_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": self._pg_url(self.airflow_database, "db+postgresql+psycopg2"),
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
                "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": CELERY_CONFIG_OPTIONS,
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.log_server_port),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.api_port}/execution/",
                "AIRFLOW__API_AUTH__JWT_SECRET": self.jwt_secret,
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "RECFORGE_HOME": str(self.settings.home),
                "RECFORGE_MLFLOW_TRACKING_URI": self.mlflow_url,
                **MLFLOW_SERVER_ENVIRONMENT,
                "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                **self.extra_environment,
            }
        )
        return env

    def airflow(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run one `airflow` CLI command against this stack."""
        result = subprocess.run(
            [str(BIN / "airflow"), *args], env=self.environment(), capture_output=True, text=True, timeout=300
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
        return result

    def _spawn(self, name: str, command: list[str]) -> None:
        spawn(self.processes, self.logs_dir, name, command, self.environment())

    def start(self) -> None:
        """The MLflow server and every Airflow component; returns once they answer."""
        self.settings.ensure_dirs()
        airflow_db.migrate(self.environment())
        self.start_mlflow()
        api_server = [str(BIN / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(self.api_port)]
        self._spawn("api-server", api_server)
        for component in ("scheduler", "dag-processor", "triggerer"):
            self._spawn(component, [str(BIN / "airflow"), component])
        self._spawn("celery-worker", [str(BIN / "airflow"), "celery", "worker"])
        self.wait_until_ready(("api-server", "mlflow"))

    def start_mlflow(self) -> None:
        self._spawn(
            "mlflow",
            [
                str(BIN / "mlflow"), "server",
                "--backend-store-uri", self._pg_url(self.mlflow_database),
                "--artifacts-destination", str(self.settings.mlflow_dir / "server-artifacts"),
                "--host", "127.0.0.1", "--port", str(self.mlflow_port), "--workers", "1",
            ],
        )  # fmt: skip

    def wait_until_ready(self, components: tuple[str, ...], timeout: float = 180) -> None:
        checks = {
            "api-server": api_health_url(self.api_port),
            "mlflow": f"{self.mlflow_url}/health",
        }
        wait_until_answering({name: checks[name] for name in components}, self.processes, self.logs_dir, timeout)


def ensure_databases(settings: Settings, names: tuple[str, ...]) -> None:
    """Create the PostgreSQL databases the stack needs, if they do not exist yet (UTC)."""
    import psycopg2

    admin = psycopg2.connect(
        host=settings.pg_host, port=settings.pg_port, user=settings.pg_user,
        password=settings.pg_password or None, dbname="postgres",
    )  # fmt: skip
    admin.autocommit = True
    with admin.cursor() as cur:
        for name in names:
            cur.execute("select 1 from pg_database where datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(f'create database "{name}"')
                cur.execute(f"alter database \"{name}\" set timezone to 'UTC'")
    admin.close()
