"""Celery configuration for the scaled-out stack: Airflow's defaults, plus warm workers.

Airflow runs each task in a process forked from the Celery worker. Importing the stage libraries
(Great Expectations alone takes seconds) once in the worker, before its pool forks, means no task
pays for them again: a 30-day backfill has 60 tasks. The scheduler imports this module too (it
builds the Celery app), but the preload runs only in workers, on Celery's ``worker_init`` signal.

Selected with ``AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=pipelines.runtime.celery_config.CELERY_CONFIG``.
"""

from __future__ import annotations

import logging

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import worker_init

from pipelines.runtime.warm_airflow import PRELOADED_MODULES, preload

log = logging.getLogger(__name__)

CELERY_CONFIG = DEFAULT_CELERY_CONFIG


@worker_init.connect
def preload_stage_libraries(**_) -> None:
    preload()
    log.info("preloaded %s for the tasks this worker forks", ", ".join(PRELOADED_MODULES))
