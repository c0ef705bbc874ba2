"""A keyset batch planned and fenced by one statement, where the database can return rows.

A keyset batch is planned from its keys alone, so the plan's read can go inside the lane's
compare-and-set: one round trip instead of two, and the batch's keys never leave the
database. PostgreSQL and SQLite do it (UPDATE ... RETURNING); MySQL/MariaDB cannot return
rows from an UPDATE and keep the separate plan. So do keys whose cursor text SQL cannot
write as Python does (see cursors.cursor_text_in_sql), and a run's very first batch when the
run has no end key to tell the key's type.
"""

from __future__ import annotations

import uuid

from sqlalchemy import Update
from sqlalchemy.orm import Session

from data_tasks.chunk import Chunk, Fenced
from data_tasks.data_task import Batch, DataTask
from data_tasks.lanes import advance_over
from data_tasks.records import encode_cursor, utcnow
from data_tasks.shapes import KeysetBackfill

# (from the start, no end key, the key's part types) -> the statement, None: cannot fold.
_Shape = tuple[bool, bool, tuple[type, ...]]


class FoldedPlan:
    """The folded statements of one task, built once per chunk: a batch runs one of them."""

    def __init__(self, task: DataTask, update_returning: bool) -> None:
        self.task = task if isinstance(task, KeysetBackfill) and update_returning else None
        self._statements: dict[_Shape, Update | None] = {}

    def statement(self, chunk: Chunk) -> Update | None:
        """The statement for the chunk's next batch, or None when it is planned apart."""
        like = chunk.cursor if chunk.cursor is not None else chunk.upper
        if self.task is None or like is None:
            return None
        parts = like if isinstance(like, list | tuple) else [like]
        shape = (chunk.cursor is None, chunk.upper is None, tuple(type(part) for part in parts))
        if shape not in self._statements:
            keys, _ = self.task.next_keys(chunk.cursor, chunk.batch_size, chunk.upper)
            foldable = all(isinstance(part, int | uuid.UUID) for part in parts)
            self._statements[shape] = advance_over(keys, like, shape[0]) if foldable else None
        return self._statements[shape]

    def plan_and_advance(self, session: Session, chunk: Chunk, statement: Update) -> Batch | None:
        """Run the statement: the batch it moved the cursor over, None when no key is left."""
        assert self.task is not None
        _, parameters = self.task.next_keys(chunk.cursor, chunk.batch_size, chunk.upper)
        parameters.update(
            chunk.parameters(),
            l_old=encode_cursor(chunk.cursor),
            l_beat=utcnow(),
            l_batch_size=chunk.batch_size,
        )
        row = session.connection().execute(statement, parameters).mappings().first()
        if row is None:
            raise Fenced()
        if not row["size"]:
            return None
        width = len(self.task.keys.columns)
        first, last = (
            row[f"{end}_0"] if width == 1 else tuple(row[f"{end}_{i}"] for i in range(width))
            for end in ("first", "last")
        )
        return Batch(next_cursor=last, size=int(row["size"]), payload=(first, last))
