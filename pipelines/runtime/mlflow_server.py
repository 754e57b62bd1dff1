"""How every launcher runs an MLflow tracking server (`recforge ui`, the scaled stack, compose).

MLflow 3's server starts a job runner and a pool of Huey consumers by default, for its GenAI jobs
(trace roll-ups, prompt optimisation). recforge runs none of them: on this 2-core machine they were
eight more processes and about 25 s of CPU at every start, taken from the tasks. docker-compose.yml
sets the same variables on its `mlflow` service (tests/scaled/test_compose.py checks they agree).
"""

from __future__ import annotations

MLFLOW_SERVER_ENVIRONMENT = {
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
}
