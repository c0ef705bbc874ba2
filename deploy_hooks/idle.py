"""The deploy hook's first look: is there nothing to do? Answered without the ORM or Celery.

Most deploys add no data task. The hook then only has to see that every task file is recorded
as done and that no run is open, which two plain queries tell; the scheduler's full pass (the
ORM and its mappers, the dependency graph, the sweep of open runs, the Celery app) is imported
only when that is not so.
"""

from __future__ import annotations

from redis.exceptions import LockError, RedisError
from sqlalchemy import Engine, text
from sqlalchemy.exc import ArgumentError, DBAPIError

from data_tasks.coordination import Coordinator, connect, unavailable
from data_tasks.database import COMMAND_TIMEOUTS, check_reachable, make_engine
from data_tasks.discovery import discover
from data_tasks.layout import SCHEMA_VERSION
from data_tasks.settings import Settings
from data_tasks.status import DONE

LAYOUT = text("SELECT version FROM data_tasks_schema")
STATUSES = text("SELECT version, status FROM task_records")


def nothing_to_do(settings: Settings) -> bool:
    """True when every task file is recorded as done and no run is open.

    It looks in the full pass's order and fails with its errors (a bad file name, a database
    or Redis that cannot be reached, another pass holding the hook lock), holding the same
    lock; on anything else it answers False and leaves the decision to the full pass.
    """
    files = discover(settings.tasks_dirs)
    seconds = settings.connect_timeout_seconds
    try:
        # Two reads, no transaction held: the command timeouts are the only bounds it needs.
        engine = make_engine(
            settings.database_url, connect_timeout=seconds, timeouts=COMMAND_TIMEOUTS
        )
        coordinator = Coordinator(connect(settings, timeout=seconds), settings)
    except (ValueError, ArgumentError):
        return False  # The full pass reports the URL, redacted.
    try:
        check_reachable(engine)
        try:
            lock = coordinator.hook_lock()
            lock.acquire()
        except RedisError as error:
            raise unavailable(settings, error) from None
        try:
            statuses = recorded(engine)
        finally:
            try:
                lock.release()
            except (RedisError, LockError):
                pass  # The lock expires by itself.
    finally:
        engine.dispose()
        coordinator.close()
    if statuses is None:
        return False
    done = {status.value for status in DONE}
    return all(status in done for status in statuses.values()) and all(
        task_file.version in statuses for task_file in files
    )


def recorded(engine: Engine) -> dict[str, str] | None:
    """Each record's status; None when the tables are missing or not this release's layout."""
    try:
        with engine.connect() as connection:
            if connection.execute(LAYOUT).scalar() != SCHEMA_VERSION:
                return None
            return {str(v): str(s) for v, s in connection.execute(STATUSES).all()}
    except DBAPIError:
        return None
