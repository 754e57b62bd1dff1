"""Real PostgreSQL and Redis for the scaled-configuration tests.

Each test gets its own database (or Redis db number) and cleans up. When a server is not
reachable the test is skipped, except under CI=true, where it fails: CI must not go green
by silently not testing the scaled configuration.
"""

from __future__ import annotations

import os
import uuid

import pytest

PG = {"host": "127.0.0.1", "port": 5432, "user": "root"}
REDIS_URL = "redis://127.0.0.1:6379"


def unavailable(what: str, error: Exception):
    message = f"{what} is not reachable ({error}); the scaled-configuration tests need it"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def admin_connection():
    import psycopg2

    try:
        connection = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG)
    except psycopg2.OperationalError as error:
        unavailable(f"PostgreSQL at {PG['host']}:{PG['port']}", error)
    connection.autocommit = True
    return connection


@pytest.fixture
def new_postgres_database():
    """Creates fresh databases (UTC) on demand and drops them all afterwards."""
    admin = admin_connection()
    created: list[str] = []

    def create() -> str:
        name = f"recforge_test_{uuid.uuid4().hex[:10]}"
        with admin.cursor() as cur:
            cur.execute(f'create database "{name}"')
            cur.execute(f"alter database \"{name}\" set timezone to 'UTC'")
        created.append(name)
        return name

    try:
        yield create
    finally:
        with admin.cursor() as cur:
            for name in created:
                cur.execute(
                    "select pg_terminate_backend(pid) from pg_stat_activity "
                    "where datname = %s and pid <> pg_backend_pid()",
                    (name,),
                )
                cur.execute(f'drop database if exists "{name}"')
        admin.close()


@pytest.fixture
def postgres_database(new_postgres_database) -> str:
    """One fresh database, dropped afterwards."""
    return new_postgres_database()


@pytest.fixture
def redis_db():
    """A Redis database number nobody else is using, flushed afterwards. Yields its URL."""
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
        client.ping()
    except redis.RedisError as error:
        unavailable(f"Redis at {REDIS_URL}", error)
    number = 7 + uuid.uuid4().int % 8
    client = redis.Redis.from_url(f"{REDIS_URL}/{number}")
    client.flushdb()
    try:
        yield f"{REDIS_URL}/{number}"
    finally:
        client.flushdb()
