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
