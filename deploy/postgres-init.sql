-- Runs once, when the PostgreSQL volume is first created: one database per service.
CREATE DATABASE airflow;
CREATE DATABASE mlflow;
CREATE DATABASE recforge;
ALTER DATABASE airflow SET timezone TO 'UTC';
ALTER DATABASE mlflow SET timezone TO 'UTC';
ALTER DATABASE recforge SET timezone TO 'UTC';
