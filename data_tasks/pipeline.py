"""Batches on PostgreSQL whose COMMIT travels with the next batch's BEGIN (and plan).

In psycopg's pipeline mode a batch's COMMIT, the next batch's BEGIN (with its opening, see
database.batch_opening) and, for a folded batch (folded_plan.py), the statement that plans the
next batch and moves its lane's cursor all go out in one network write. A folded keyset batch
then waits on the database twice (for that write and for the task's own statement) where a
hand-written loop waits three times (BEGIN, UPDATE, COMMIT). Any other batch (row iteration,
other key types, custom batches) still plans and fences with statements of its own, but its
BEGIN and opening cost no round trip: it waits as often as a hand-written loop that reads a
page, writes it back and commits, plus its fence. The further the database, the more that saves.

The runner sends BEGIN and COMMIT itself, on a connection in driver autocommit: psycopg would
otherwise send its own BEGIN and wait for it. SQLAlchemy's transaction around the chunk is
only a frame: its ROLLBACK at the end sends nothing once the server has no transaction open,
and rolls back a batch left open by an error.

A next batch is opened only when the runner is going to run it (its checks are made before
the COMMIT); a batch opened and planned but not run is rolled back, its cursor move with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from data_tasks.authors_turn import ABORTED, BatchAborted
from data_tasks.chunk import Chunk
from data_tasks.data_task import Batch
from data_tasks.folded_plan import FoldedPlan, batch_of

if TYPE_CHECKING:
    # psycopg is imported where it is used: a plain install (SQLite) does not have it.
    import psycopg


def pipelines(session: Session) -> bool:
    """True when a chunk's batches can run pipelined: psycopg 3 on PostgreSQL."""
    dialect = cast(Connection, session.bind).dialect
    if dialect.name != "postgresql" or dialect.driver != "psycopg":
        return False
    import psycopg

    return psycopg.Pipeline.is_supported()


class BatchPipeline:
    """A chunk's batches on one psycopg connection; see the module's docstring."""

    def __init__(
        self, session: Session, folded: FoldedPlan, opening: str | None, chunk: Chunk
    ) -> None:
        self.session = session
        self.folded = folded
        # True when each batch is planned by the folded statement sent with its BEGIN; False
        # when the runner plans it after the BEGIN (the same for all of a chunk's cursors).
        self.plans = folded.statement(chunk.cursor, chunk.upper) is not None
        # Sent after each BEGIN, in the same network write (see database.batch_opening).
        self._opening = opening.encode() if opening else None
        # The statements as psycopg runs them, with the values SQLAlchemy fixes in them.
        self._compiled: dict[int, tuple[str, dict[str, Any]]] = {}
        self._cursors: _Cursors | None = None

    @contextmanager
    def opened(self) -> Iterator[BatchPipeline]:
        """Put the connection in driver autocommit for the chunk; roll back what is left open."""
        connection = cast(Connection, self.session.bind)
        connection.execution_options(isolation_level="AUTOCOMMIT")
        raw = cast("psycopg.Connection[Any]", self.session.connection().connection.dbapi_connection)
        self._cursors = _Cursors(raw)
        try:
            yield self
        finally:
            self._cursors.close()
            self._cursors = None
            self.session.rollback()

    def first(self, chunk: Chunk) -> Batch | None:
        """Open the chunk's first batch, and plan it where `plans`, in one round trip.

        Returns the planned batch; None when no key is left or the runner is to plan it."""
        return self._send(chunk, chunk.cursor, None, open_next=True)

    def commit(self, chunk: Chunk, done: Batch, cursor: Any, open_next: bool) -> Batch | None:
        """Commit the open batch, `done`, and count it with the cursor after it; with open_next,
        open the next one (and plan it where `plans`) in the same round trip. Returns the next
        batch where it was planned; None when none was planned or is left."""
        return self._send(chunk, cursor, done, open_next=open_next)

    def end(self) -> None:
        """Commit the open transaction of a plan that found nothing left."""
        with self._errors("COMMIT"):
            self._opened.commit.execute(b"COMMIT")

    @property
    def _opened(self) -> _Cursors:
        assert self._cursors is not None, "use the pipeline inside opened()"
        return self._cursors

    def _send(self, chunk: Chunk, cursor: Any, done: Batch | None, open_next: bool) -> Batch | None:
        cursors = self._opened
        plan = open_next and self.plans
        sql, parameters = self._statement(chunk, cursor) if plan else ("", {})
        committing = planned = None
        committed = False
        with self._errors(sql or "COMMIT", parameters):
            try:
                with cursors.connection.pipeline():
                    if done is not None:
                        committing = cursors.commit.execute(b"COMMIT")
                    if open_next:
                        cursors.begin.execute(b"BEGIN")
                        if self._opening:
                            cursors.begin.execute(self._opening)
                    if plan:
                        planned = cursors.plan.execute(sql.encode(), parameters)
            finally:
                # Counted as soon as the COMMIT went through, whatever came after it.
                committed = _committed(committing)
                if done is not None and committed:
                    chunk.count(done.size, cursor)
        if done is not None and not committed:
            # PostgreSQL answered the COMMIT of an aborted transaction with a ROLLBACK.
            raise BatchAborted(ABORTED)
        return batch_of(planned.fetchone()) if planned is not None else None

    def _statement(self, chunk: Chunk, cursor: Any) -> tuple[str, dict[str, Any]]:
        statement = self.folded.statement(cursor, chunk.upper)
        assert statement is not None, "a pipelined chunk's keys are integers"
        sql, fixed = self._compiled.get(id(statement)) or self._compile(statement)
        return sql, {**fixed, **self.folded.parameters(chunk, cursor)}

    def _compile(self, statement: Update) -> tuple[str, dict[str, Any]]:
        compiled = statement.compile(dialect=cast(Connection, self.session.bind).dialect)
        # The values written in the statement (a status, attempts=0); the rest are the plan's.
        fixed = {
            compiled.bind_names[bind]: bind.effective_value
            for bind in compiled.binds.values()
            if not bind.required
        }
        self._compiled[id(statement)] = (compiled.string, fixed)
        return self._compiled[id(statement)]

    @contextmanager
    def _errors(self, sql: str, parameters: dict[str, Any] | None = None) -> Iterator[None]:
        """Raise the driver's errors as SQLAlchemy raises them from a session's statements."""
        import psycopg

        try:
            yield
        except psycopg.Error as error:
            raise DBAPIError.instance(sql, parameters, error, psycopg.Error) from error


class _Cursors:
    """The cursors a chunk's batches reuse: making four new ones every batch cost about
    0.05 ms in psycopg's pipeline, 1 % of a 1,000-key batch."""

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self.connection = connection
        self.commit = connection.cursor()
        self.begin = connection.cursor()
        self.plan = connection.cursor()

    def close(self) -> None:
        for cursor in (self.commit, self.begin, self.plan):
            cursor.close()


def _committed(result: psycopg.Cursor[Any] | None) -> bool:
    """True when PostgreSQL answered the COMMIT with a COMMIT (not an error, nor a ROLLBACK)."""
    from psycopg.pq import ExecStatus

    if result is None or result.pgresult is None:
        return False
    return result.pgresult.status == ExecStatus.COMMAND_OK and result.statusmessage == "COMMIT"
