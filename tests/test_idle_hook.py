"""A deploy with nothing new on PostgreSQL: psycopg alone, and the full pass's errors and bounds."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from psycopg.pq import TransactionStatus
from sqlalchemy import Engine, inspect, text

from data_tasks.database import COMMAND_TIMEOUTS, connect_psycopg, psycopg_url
from data_tasks.errors import ServiceUnavailable
from data_tasks.settings import Settings
from deploy_hooks.enqueue import NOTHING_NEW, full_pass
from deploy_hooks.exit_codes import DATABASE_UNREACHABLE, OK
from deploy_hooks.idle import nothing_to_do
from tests.processes import run_hook


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose server accepts connections and never answers (a frozen PostgreSQL)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


def closed_port() -> int:
    """A port with nothing listening on it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def full_pass_error(settings: Settings) -> str:
    """The line the full pass prints for these settings' database."""
    with pytest.raises(ServiceUnavailable) as raised:
        full_pass(settings)
    return f"error: {raised.value}"


def hook_error(settings: Settings, **extra: str) -> str:
    """The one line a failing hook prints on stderr, once its exit code is checked."""
    result = run_hook(settings, **extra)
    assert result.returncode == DATABASE_UNREACHABLE, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_an_unreachable_postgresql_is_the_full_pass_line_and_exit_3(
    pg_settings: Settings,
) -> None:
    url = f"postgresql://postgres:hunter2@127.0.0.1:{closed_port()}/x"
    settings = pg_settings.with_(database_url=url)

    line = hook_error(settings)

    assert line == full_pass_error(settings)
    assert line.startswith("error: database unreachable at postgresql+psycopg://postgres:***@")
    assert "hunter2" not in line


def test_a_database_that_does_not_exist_is_the_full_pass_line_and_exit_3(
    pg_settings: Settings, postgres_engine: Engine
) -> None:
    url = postgres_engine.url.set(database="data_tasks_no_such_database")
    settings = pg_settings.with_(database_url=url.render_as_string(hide_password=False))

    line = hook_error(settings)

    assert line == full_pass_error(settings)
    assert 'database "data_tasks_no_such_database" does not exist' in line


def test_a_server_that_never_answers_fails_within_the_connect_timeout(
    pg_settings: Settings, silent_port: int
) -> None:
    settings = pg_settings.with_(database_url=f"postgresql://postgres@127.0.0.1:{silent_port}/x")

    started = time.monotonic()
    line = hook_error(settings, DATA_TASKS_CONNECT_TIMEOUT_SECONDS="2")
    took = time.monotonic() - started

    assert line.startswith("error: database unreachable at "), line
    # One connect timeout and the process's start, not two timeouts (a second connection).
    assert 2 <= took < 3.5, f"took {took:.1f}s"


def test_missing_tables_are_left_to_the_full_pass_which_creates_them(
    pg_settings: Settings, postgres_engine: Engine
) -> None:
    result = run_hook(pg_settings)

    assert result.returncode == OK, result.stderr
    assert result.stdout.splitlines()[0] == NOTHING_NEW
    assert {"task_records", "data_tasks_schema"} <= set(inspect(postgres_engine).get_table_names())


def test_tables_of_another_layout_are_left_to_the_full_pass(
    pg_settings: Settings, postgres_engine: Engine
) -> None:
    assert run_hook(pg_settings).returncode == OK  # creates the tables
    assert nothing_to_do(pg_settings)

    with postgres_engine.begin() as connection:
        connection.execute(text("UPDATE data_tasks_schema SET version = version - 1"))
    assert not nothing_to_do(pg_settings)


def test_the_direct_connection_has_the_command_bounds_and_no_transaction(
    pg_settings: Settings,
) -> None:
    url = psycopg_url(pg_settings.database_url)
    assert url is not None

    with connect_psycopg(url, 2.4, COMMAND_TIMEOUTS) as connection:
        assert connection.autocommit
        assert connection.info.get_parameters()["connect_timeout"] == "2"
        assert connection.execute("SHOW lock_timeout").fetchone() == ("4s",)
        assert connection.execute("SHOW statement_timeout").fetchone() == ("6s",)
        # Each statement commits on its own: no transaction outlives it.
        assert connection.info.transaction_status == TransactionStatus.IDLE


def test_hosts_given_in_the_query_are_left_to_sqlalchemy() -> None:
    assert psycopg_url("postgresql://u@/db?host=/var/run/postgresql") is None
    assert psycopg_url("postgresql+psycopg2://u@h/db") is None
    assert psycopg_url("mysql://u@h/db") is None
    url = psycopg_url("postgres://u:p%40ss@h:6543/db?sslmode=require")
    assert url is not None
    assert url.translate_connect_args() == {
        "username": "u",
        "password": "p@ss",
        "host": "h",
        "port": 6543,
        "database": "db",
    }
