"""The embedded default's Airflow, running for the length of one `recforge run`.

An API server (the task runners' execution API, on a free loopback port), a scheduler with the
LocalExecutor and a DAG processor, on the home's SQLite metadata DB: the same processes
`recforge ui` starts, so the runs they execute are real ones (scheduled by the scheduler, task
logs in the home's log folder that the Airflow UI shows, real start and end times).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.runtime.airflow_home import api_health_url, local_executor_environment
from pipelines.runtime.processes import ProcessGroup, free_port, spawn, wait_until_answering
from pipelines.settings import Settings

# The scheduler's loop and the DAG processor's refresh, tightened: a demo of a few dozen short
# runs would otherwise spend most of its time waiting for the next heartbeat.
RESPONSIVE_SCHEDULING = {
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",  # the task logs hold everything a task says
}


@dataclass
class LocalAirflow(ProcessGroup):
    settings: Settings
    extra_environment: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def logs_dir(self) -> Path:
        return self.settings.home / "run-logs"

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            **local_executor_environment(self.settings, "127.0.0.1", self.port),
            **RESPONSIVE_SCHEDULING,
            **self.extra_environment,
        }

    def start(self) -> None:
        airflow = str(Path(sys.executable).with_name("airflow"))
        commands = {
            "api-server": [airflow, "api-server", "--host", "127.0.0.1", "--port", str(self.port)],
            # Its LocalExecutor forks every task: started warm, no task imports Great Expectations again.
            "scheduler": [sys.executable, "-m", "pipelines.runtime.warm_airflow", "scheduler", "--skip-serve-logs"],
            "dag-processor": [airflow, "dag-processor"],
        }
        environment = self.environment()
        for name, command in commands.items():
            spawn(self.processes, self.logs_dir, name, command, environment)
        health = {"api-server": api_health_url(self.port)}
        wait_until_answering(health, self.processes, self.logs_dir)
