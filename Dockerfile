# One image for every recforge process: Airflow components, the Celery worker and the API.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 RECFORGE_HOME=/var/recforge
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential libgomp1 curl git \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/recforge
# The CPU build of torch first: from PyPI, torch==2.13.0 would bring several GB of CUDA libraries.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml setup.py README.md ./
COPY pipelines ./pipelines
COPY models ./models
COPY serving ./serving
COPY dags ./dags
RUN pip install -e '.[pipeline,serving,scaled]'
COPY dbt_project ./dbt_project
COPY expectations ./expectations

# /var/recforge-failures: serving's failure log volume (a new named volume takes this owner).
RUN useradd --create-home --uid 50000 recforge && mkdir -p /var/recforge /var/recforge-failures \
    && chown recforge /var/recforge /var/recforge-failures
USER recforge
