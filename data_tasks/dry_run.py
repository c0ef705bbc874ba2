"""A dry run: a task's next batches run in one transaction, counted, then rolled back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from data_tasks.authors_turn import take_turn
from data_tasks.data_task import FINISHED
from data_tasks.lanes import LaneStatus, TaskLane
from data_tasks.log import log_event
from data_tasks.records import decode_cursor
from data_tasks.runtime import Runtime

DML_VERBS = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE"})


@dataclass(frozen=True)
class DryRunBatch:
    """What one batch of a dry run did before it was rolled back."""

    number: int
    # Keys or rows the batch covers.
    size: int
    # Rows its INSERT, UPDATE, DELETE and MERGE statements changed.
    rows_changed: int
    statements: int
    next_cursor: Any


@dataclass(frozen=True)
class DryRunReport:
    """A dry run: the batches it ran from the task's cursor, all rolled back."""

    version: str
    name: str
    start_cursor: Any
    batches: list[DryRunBatch]
    # True when the data ran out before the batches asked for.
    exhausted: bool

    @property
    def rows_changed(self) -> int:
        """Rows all batches would change."""
        return sum(batch.rows_changed for batch in self.batches)


@dataclass(eq=False)  # hashable: SQLAlchemy keeps listeners in dicts
class _RowCounter:
    rows: int = 0
    statements: int = 0

    def __call__(self, _conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        words = statement.split(None, 1)
        if words and words[0].upper() in DML_VERBS:
            self.statements += 1
            self.rows += max(0, int(cursor.rowcount or 0))


def dry_run(runtime: Runtime, version: str, batches: int = 1) -> DryRunReport:
    """Run up to `batches` batches from the task's cursor in one transaction, then roll back.

    Writes outside the database (files, APIs) are not rolled back: custom tasks that make
    them should not be dry-run.
    """
    if batches < 1:
        raise ValueError(f"batches must be at least 1, not {batches}")
    task = runtime.catalog.task(version)
    runtime.create_tables()
    with runtime.session() as session:
        # From the first lane that has work left, or from the beginning.
        lane = session.scalars(
            select(TaskLane)
            .where(TaskLane.version == version, TaskLane.status != LaneStatus.SUCCEEDED.value)
            .order_by(TaskLane.lane)
            .limit(1)
        ).first()
    cursor = decode_cursor(lane.cursor) if lane else None
    upper = decode_cursor(lane.upper) if lane else None
    start = cursor
    batch_size = (lane.batch_size if lane else None) or task.options.batch_size
    done: list[DryRunBatch] = []
    exhausted = False
    counter = _RowCounter()
    with (
        runtime.batch_connection() as connection,
        runtime.batch_transaction(),
        runtime.watching(counter),
    ):
        event.listen(connection, "after_cursor_execute", counter)
        transaction = connection.begin()
        try:
            # A savepoint session: even a task that calls commit() cannot escape the rollback.
            with Session(bind=connection, join_transaction_mode="create_savepoint") as work:
                for number in range(1, batches + 1):
                    batch = task.plan(work, cursor, batch_size, upper)
                    if batch is None:
                        exhausted = True
                        break
                    rows, statements = counter.rows, counter.statements
                    # Refused as in a real batch, so that the dry run shows the error it would.
                    returned = take_turn(work, task, batch)
                    work.flush()
                    if batch.cursor_from_apply:
                        cursor = FINISHED if returned is None else returned
                    else:
                        cursor = batch.next_cursor
                    done.append(
                        DryRunBatch(
                            number=number,
                            size=batch.size,
                            rows_changed=counter.rows - rows,
                            statements=counter.statements - statements,
                            next_cursor=cursor,
                        )
                    )
        finally:
            transaction.rollback()
            event.remove(connection, "after_cursor_execute", counter)
    log_event("dry_run", version=version, batches=len(done), rows=sum(b.rows_changed for b in done))
    return DryRunReport(version, task.name, start, done, exhausted)
