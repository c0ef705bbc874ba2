"""A gate for Alembic migrations: go on only once a data task has succeeded or been skipped."""

from __future__ import annotations

from sqlalchemy import Connection, inspect, text

from data_tasks.errors import DataTaskNotDone
from data_tasks.status import DONE, Status

TABLE = "task_records"


def require_succeeded(version: str, *, connection: Connection | None = None) -> None:
    """Raise DataTaskNotDone unless the data task `version` succeeded or was skipped.

    Inside a migration, call it with no connection: it reads the record through
    `op.get_bind()`, in the migration's own transaction. The error is one line that names the
    task and its status, and the migration (and those after it) do not run.
    """
    if connection is None:
        from alembic import op

        connection = op.get_bind()
    # Checked first: a failed SELECT would abort the migration's transaction on PostgreSQL.
    if not inspect(connection).has_table(TABLE):
        raise DataTaskNotDone(version, None, None)
    row = connection.execute(
        text(f"SELECT name, status FROM {TABLE} WHERE version = :version"), {"version": version}
    ).first()
    if row is None:
        raise DataTaskNotDone(version, None, None)
    name, status = str(row[0]), str(row[1])
    if Status(status) not in DONE:
        raise DataTaskNotDone(version, name, status)
