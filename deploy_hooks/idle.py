"""The deploy hook's first look: is there nothing to do? Answered without the ORM or Celery.

Most deploys add no data task. The hook then only has to see that every task file is recorded
as done and that no run is open, which two plain queries tell; the scheduler's full pass (the
ORM and its mappers, the dependency graph, the sweep of open runs, the Celery app) is imported
only when that is not so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from redis.exceptions import LockError, RedisError
from sqlalchemy import URL, Engine
from sqlalchemy.exc import ArgumentError, DBAPIError

from data_tasks.coordination import Coordinator, connect, unavailable
from data_tasks.database import (
    COMMAND_TIMEOUTS,
    check_reachable,
    connect_psycopg,
    make_engine,
    psycopg_url,
)
from data_tasks.discovery import discover
from data_tasks.layout import SCHEMA_VERSION
from data_tasks.settings import Settings
from data_tasks.status import DONE

# Plain SQL, which psycopg and every SQLAlchemy dialect run as it is.
LAYOUT = "SELECT version FROM data_tasks_schema"
STATUSES = "SELECT version, status FROM task_records"

# Each record's status; None when the tables are missing or not this release's layout.
Statuses = dict[str, str] | None


def nothing_to_do(settings: Settings) -> bool:
    """True when every task file is recorded as done and no run is open.

    It looks in the full pass's order and fails with its errors (a bad file name, a database
    or Redis that cannot be reached, another pass holding the hook lock), holding the same
    lock; on anything else it answers False and leaves the decision to the full pass.
    """
    files = discover(settings.tasks_dirs)
    seconds = settings.connect_timeout_seconds
    try:
        url = psycopg_url(settings.database_url)
        # PostgreSQL through psycopg alone: importing SQLAlchemy's dialect and its first
        # connection's queries cost more than the two reads. Other databases through an engine.
        reads = (
            _psycopg_reads(url, seconds)
            if url is not None
            else _engine_reads(
                make_engine(
                    settings.database_url, connect_timeout=seconds, timeouts=COMMAND_TIMEOUTS
                )
            )
        )
        coordinator = Coordinator(connect(settings, timeout=seconds), settings)
    except (ValueError, ArgumentError):
        return False  # The full pass reports the URL, redacted.
    try:
        with reads as read:
            try:
                lock = coordinator.hook_lock()
                lock.acquire()
            except RedisError as error:
                raise unavailable(settings, error) from None
            try:
                statuses = read()
            finally:
                try:
                    lock.release()
                except (RedisError, LockError):
                    pass  # The lock expires by itself.
    finally:
        coordinator.close()
    if statuses is None:
        return False
    done = {status.value for status in DONE}
    return all(status in done for status in statuses.values()) and all(
        task_file.version in statuses for task_file in files
    )


@contextmanager
def _psycopg_reads(url: URL, seconds: float) -> Iterator[Callable[[], Statuses]]:
    """Connected on entry (or ServiceUnavailable); autocommit, so no transaction stays open."""
    connection = connect_psycopg(url, seconds, COMMAND_TIMEOUTS)
    import psycopg  # Here: connect_psycopg has imported it, or raised MissingDriver.

    def read() -> Statuses:
        try:
            return _statuses(lambda sql: connection.execute(sql).fetchall())
        except psycopg.Error:
            return None

    try:
        yield read
    finally:
        connection.close()


@contextmanager
def _engine_reads(engine: Engine) -> Iterator[Callable[[], Statuses]]:
    """Reachable on entry (or ServiceUnavailable); each read in a connection of its own."""

    def read() -> Statuses:
        try:
            with engine.connect() as connection:
                return _statuses(lambda sql: connection.exec_driver_sql(sql).all())
        except DBAPIError:
            return None

    try:
        check_reachable(engine)
        yield read
    finally:
        engine.dispose()


def _statuses(fetch: Callable[[str], Sequence[Sequence[Any]]]) -> Statuses:
    layout = fetch(LAYOUT)
    if not layout or layout[0][0] != SCHEMA_VERSION:
        return None
    return {str(version): str(status) for version, status in fetch(STATUSES)}
