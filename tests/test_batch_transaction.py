"""A task function that ends its batch's transaction itself: refused, nothing lost."""

from __future__ import annotations

import pytest

from data_tasks import operations
from data_tasks.runtime import Runtime
from data_tasks.status import Status
from tests.items import applied_counts, create_items
from tests.running import record

VERSION = "20250901000500"
TASK = '''"""Add one to items.applied in two halves, {what} between them."""

from sqlalchemy import text

from data_tasks import keyset_backfill


@keyset_backfill("items", key="id", batch_size=100, max_attempts=1)
def halves(session, first_id, last_id):
    middle = (first_id + last_id) // 2
    add = text("UPDATE items SET applied = applied + 1 WHERE id BETWEEN :f AND :l")
    session.execute(add, {{"f": first_id, "l": middle}})
    {between}
    session.execute(add, {{"f": middle + 1, "l": last_id}})
'''


def write_task(runtime: Runtime, what: str, between: str) -> None:
    """The task file a user writes, with `between` run between its two halves."""
    path = runtime.settings.tasks_dir / f"{VERSION}_halves.py"
    path.write_text(TASK.format(what=what, between=between))


@pytest.mark.parametrize(
    ("call", "named"),
    [
        ("session.commit()", "called session.commit()"),
        ("session.rollback()", "called session.rollback()"),
    ],
)
def test_a_batch_that_ends_its_own_transaction_fails_with_one_line_and_writes_nothing(
    db_runtime: Runtime, call: str, named: str
) -> None:
    write_task(db_runtime, f"a {call}", call)
    create_items(db_runtime.engine, 300)

    run = operations.run_inline(db_runtime, VERSION)

    assert run.status == Status.FAILED
    failed = record(db_runtime, VERSION)
    assert failed.last_error is not None and named in failed.last_error
    assert "\n" not in failed.last_error.splitlines()[0]
    # Neither half of the first batch, nor the cursor over it, was committed.
    assert applied_counts(db_runtime.engine) == {0: 300}
    assert failed.processed == 0


def test_a_savepoint_inside_a_batch_is_the_authors_own_and_allowed(db_runtime: Runtime) -> None:
    between = "with session.begin_nested():\n        session.execute(text('SELECT 1'))"
    write_task(db_runtime, "a savepoint", between)
    create_items(db_runtime.engine, 300)

    run = operations.run_inline(db_runtime, VERSION)
    assert run.status == Status.SUCCEEDED, record(db_runtime, VERSION).last_error
    assert applied_counts(db_runtime.engine) == {1: 300}


CAUGHT = '''"""Add one to items.applied, then log the batch where a log table may be missing."""

from sqlalchemy import column, select, table, text
from sqlalchemy.exc import DBAPIError

from data_tasks import keyset_backfill, row_iteration

items = table("items", column("id"))
ADD = text("UPDATE items SET applied = applied + 1 WHERE id BETWEEN :f AND :l")


def log_batch(session):
    try:
        session.execute(text("INSERT INTO batch_log (note) VALUES ('done')"))
    except DBAPIError:
        pass  # no log table: the author means to go on without it

'''
SHAPES = {
    "keyset_backfill": """
@keyset_backfill("items", key="id", batch_size=100, max_attempts=1)
def by_keys(session, first_id, last_id):
    session.execute(ADD, {"f": first_id, "l": last_id})
    log_batch(session)
""",
    "row_iteration": """
@row_iteration(select(items.c.id), key="id", batch_size=100, max_attempts=1)
def by_rows(session, rows):
    session.execute(ADD, {"f": rows[0].id, "l": rows[-1].id})
    log_batch(session)
""",
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_failed_statement_whose_error_the_function_catches_loses_no_batch(
    db_runtime: Runtime, shape: str
) -> None:
    # SQLite and MariaDB fail only that statement; PostgreSQL aborts the whole transaction,
    # whose COMMIT then rolls back: the batch must fail, not pass for committed.
    path = db_runtime.settings.tasks_dir / f"{VERSION}_caught.py"
    path.write_text(CAUGHT + SHAPES[shape])
    create_items(db_runtime.engine, 300)

    run = operations.run_inline(db_runtime, VERSION)

    done = record(db_runtime, VERSION)
    if db_runtime.engine.dialect.name == "postgresql":
        assert run.status == Status.FAILED
        assert done.last_error is not None and "caught the error" in done.last_error
        assert "begin_nested" in done.last_error
        assert (applied_counts(db_runtime.engine), done.processed) == ({0: 300}, 0)
    else:
        assert run.status == Status.SUCCEEDED, done.last_error
        assert (applied_counts(db_runtime.engine), done.processed) == ({1: 300}, 300)
