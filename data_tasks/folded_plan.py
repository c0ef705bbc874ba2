"""A keyset batch planned and fenced by one statement, where the database can return rows.

A keyset batch is planned from its keys alone, so the plan's read can go inside the lane's
compare-and-set: one round trip instead of two, and the batch's keys never leave the
database. PostgreSQL and SQLite do it (UPDATE ... RETURNING) for a key of one integer
column, whose first and last keys are its min() and max() and whose cursor text SQL writes
as Python does. MySQL/MariaDB cannot return rows from an UPDATE; other keys (uuid, text,
timestamps, composite) have no min() on PostgreSQL or another text in SQL; and a run's first
batch without an end key does not know its key's type yet: those keep the separate plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Update
from sqlalchemy.orm import Session

from data_tasks.chunk import Chunk, Fenced
from data_tasks.data_task import Batch, DataTask
from data_tasks.lanes import advance_over
from data_tasks.records import encode_cursor, utcnow
from data_tasks.shapes import KeysetBackfill


class FoldedPlan:
    """The folded statements of one task, built once per chunk: a batch runs one of them."""

    def __init__(self, task: DataTask, update_returning: bool) -> None:
        self.task = task if isinstance(task, KeysetBackfill) and update_returning else None
        # (from the start, no end key) -> the statement
        self._statements: dict[tuple[bool, bool], Update] = {}

    def statement(self, cursor: Any, upper: Any) -> Update | None:
        """The statement for the batch after `cursor`, or None when it is planned apart."""
        like = cursor if cursor is not None else upper
        if self.task is None or isinstance(like, bool) or not isinstance(like, int):
            return None
        shape = (cursor is None, upper is None)
        if shape not in self._statements:
            keys, _ = self.task.next_keys(cursor, 1, upper)
            self._statements[shape] = advance_over(keys, from_start=shape[0])
        return self._statements[shape]

    def parameters(self, chunk: Chunk, cursor: Any) -> dict[str, Any]:
        """The statement's values for the chunk's batch after `cursor`."""
        assert self.task is not None
        _, parameters = self.task.next_keys(cursor, chunk.batch_size, chunk.upper)
        parameters.update(
            chunk.parameters(),
            l_old=encode_cursor(cursor),
            l_beat=utcnow(),
            l_batch_size=chunk.batch_size,
        )
        return parameters

    def plan_and_advance(self, session: Session, chunk: Chunk, statement: Update) -> Batch | None:
        """Run the statement: the batch it moved the cursor over, None when no key is left."""
        parameters = self.parameters(chunk, chunk.cursor)
        return batch_of(session.connection().execute(statement, parameters).first())


def batch_of(row: Sequence[Any] | None) -> Batch | None:
    """The batch a folded statement moved the cursor over; None when no key was left.

    No row at all means the compare-and-set matched nothing: the chunk is fenced.
    """
    if row is None:
        raise Fenced()
    size, first, last = row
    if not size:
        return None
    return Batch(next_cursor=last, size=int(size), payload=(first, last))
