"""Reaching the real PostgreSQL, MariaDB and Redis the tests use; skip locally, fail under CI."""

from __future__ import annotations

import os
import secrets

import pytest
import redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from data_tasks.database import normalize_url

# The server the tests create their own throw-away databases on.
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
# The MariaDB (or MySQL) server of the MariaDB tests, which also make their own databases there.
MARIADB_URL = os.environ.get("TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306/test")
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


def create_mariadb_database() -> str:
    """Create a new empty MariaDB database for one test session and return its URL."""
    admin_url = normalize_url(MARIADB_URL)
    name = f"data_tasks_test_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        admin = create_engine(admin_url, connect_args={"connect_timeout": 3})
        with admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        admin.dispose()
    except Exception as error:
        unavailable("MariaDB", error)
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_mariadb_database(url: str) -> None:
    """Drop a database made by create_mariadb_database."""
    admin = create_engine(normalize_url(MARIADB_URL))
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS `{make_url(url).database}`"))
    admin.dispose()


def empty_mariadb_database(engine: Engine) -> None:
    """Drop every table of the engine's database (what DROP SCHEMA public does on PostgreSQL)."""
    with engine.begin() as connection:
        names = connection.execute(
            text("SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()")
        ).scalars()
        tables = ", ".join(f"`{name}`" for name in names)
        if tables:
            connection.execute(text("SET SESSION foreign_key_checks = 0"))
            connection.execute(text(f"DROP TABLE {tables}"))
            connection.execute(text("SET SESSION foreign_key_checks = 1"))


def flushed_redis(url: str = REDIS_URL) -> redis.Redis:
    """A client on the tests' Redis database, flushed."""
    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.flushdb()
    except redis.RedisError as error:
        unavailable("Redis", error)
    return client
