"""Reaching the real PostgreSQL and Redis the tests use; skip locally, fail under CI."""

from __future__ import annotations

import os
import secrets

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from data_tasks.database import normalize_url

# The server the tests create their own throw-away databases on.
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
# A dedicated Redis database, flushed before and after each test that uses it.
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def unavailable(what: str, error: BaseException) -> None:
    """Skip when a service is missing on a developer's machine; fail under CI."""
    message = f"{what} unreachable: {str(error).splitlines()[0] if str(error) else error!r}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def create_postgres_database() -> str:
    """Create a new empty database for one test session and return its URL."""
    admin_url = normalize_url(POSTGRES_URL)
    name = f"data_tasks_test_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        admin = create_engine(
            admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
        )
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
    except Exception as error:
        unavailable("PostgreSQL", error)
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    """Drop a database made by create_postgres_database, closing its connections first."""
    name = make_url(url).database
    admin = create_engine(normalize_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
            {"n": name},
        )
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


def flushed_redis(url: str = REDIS_URL) -> redis.Redis:
    """A client on the tests' Redis database, flushed."""
    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.flushdb()
    except redis.RedisError as error:
        unavailable("Redis", error)
    return client
