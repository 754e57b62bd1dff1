"""Real PostgreSQL and Redis for the scaled-configuration tests.

Each test gets its own database (or Redis db number) and cleans up. When a server is not
reachable the test is skipped, except under CI=true, where it fails: CI must not go green
by silently not testing the scaled configuration.
"""

from __future__ import annotations

import os
import random
import time
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


REDIS_TEST_NUMBERS = range(7, 15)  # the db numbers tests take; 0-6 are left to anything else on the server
REDIS_CLAIM_SECONDS = 3600  # a claim outlives any test; a killed run's claims expire on their own


def redis_claim_key(number: int) -> str:
    """The key on db 0 whose holder owns db `number` for the length of one test."""
    return f"recforge-tests:redis-db:{number}"


def claim_redis_number(admin) -> tuple[int, str]:
    """A db number no other test holds, on any xdist worker: claimed with SET NX on db 0.

    Drawing a number at random let two workers take the same one (1 in 8 per pair of tests), and one
    test's flush or stream then showed in the other's.
    """
    token = uuid.uuid4().hex
    deadline = time.monotonic() + 120
    while True:
        for number in random.sample(REDIS_TEST_NUMBERS, len(REDIS_TEST_NUMBERS)):
            if admin.set(redis_claim_key(number), token, nx=True, ex=REDIS_CLAIM_SECONDS):
                return number, token
        if time.monotonic() > deadline:
            pytest.fail(f"no free Redis db number in {list(REDIS_TEST_NUMBERS)} for 120 s: other tests hold them all")
        time.sleep(0.2)


@pytest.fixture
def redis_db():
    """A Redis database number nobody else is using, flushed before and after. Yields its URL."""
    import redis

    try:
        admin = redis.Redis.from_url(f"{REDIS_URL}/0", socket_timeout=5)
        admin.ping()
    except redis.RedisError as error:
        unavailable(f"Redis at {REDIS_URL}", error)
    number, token = claim_redis_number(admin)
    client = redis.Redis.from_url(f"{REDIS_URL}/{number}")
    try:
        client.flushdb()
        yield f"{REDIS_URL}/{number}"
    finally:
        client.flushdb()
        if admin.get(redis_claim_key(number)) == token.encode():
            admin.delete(redis_claim_key(number))
