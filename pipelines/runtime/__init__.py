"""Running the stages: the Airflow-orchestrated demo run, the scaled-out stack as local processes,
Celery configuration, per-call environments.
"""
