"""The task author's turn inside a batch: the batch's transaction stays the runner's.

A batch commits the author's writes together with its cursor's compare-and-set. A function
that calls `session.commit()` would commit the cursor and half of the batch: a crash after it
loses the other half for good, since the cursor has already moved past it. One that calls
`session.rollback()` drops the compare-and-set, and what it writes after runs unfenced. Both
are refused: the batch fails with one line naming the call, and nothing of it is committed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from data_tasks.data_task import Batch, DataTask
from data_tasks.errors import DataTaskError

# The session.info key set while the author's function runs.
_TURN = "data_tasks.authors_turn"


class BatchTransactionTaken(DataTaskError):
    """The author's function committed or rolled back the batch's transaction itself."""


class BatchAborted(DataTaskError):
    """A statement of the batch failed on PostgreSQL and the author's function caught it."""


# What a batch whose transaction PostgreSQL aborted fails with: its COMMIT would roll it back.
ABORTED = (
    "a statement of the batch failed and the task's function caught the error: PostgreSQL "
    "rolls back the whole batch then; let the error propagate, or put what may fail in a "
    "savepoint (with session.begin_nested(): ...)"
)


def take_turn(session: Session, task: DataTask, batch: Batch) -> Any:
    """Apply the batch in its transaction, which the author's function may not end itself."""
    with _turn(session):
        outer = session.get_transaction()
        result = task.apply(session, batch)
    if session.get_transaction() is not outer:
        # session.close(), or a rollback whose error the function caught.
        raise BatchTransactionTaken(_refusal("ended the batch's transaction", "raise"))
    if _aborted(session):
        raise BatchAborted(ABORTED)
    return result


def _aborted(session: Session) -> bool:
    """True when the database refuses the rest of the transaction (PostgreSQL after an error)."""
    driver = session.connection().connection.dbapi_connection
    status = getattr(getattr(driver, "info", None), "transaction_status", None)
    # psycopg's TransactionStatus.INERROR; other drivers and databases have no such state.
    return getattr(status, "name", None) == "INERROR"


def _refusal(call: str, instead: str) -> str:
    return (
        f"the task's function {call}: a batch commits or rolls back its writes together with "
        f"its cursor, so that it is applied exactly once; {instead} instead"
    )


@contextmanager
def _turn(session: Session) -> Iterator[None]:
    session.info[_TURN] = True
    try:
        yield
    finally:
        session.info.pop(_TURN, None)


@event.listens_for(Session, "before_commit")
def _refuse_commit(session: Session) -> None:
    # Called for a savepoint's release too: that one is the author's own.
    if session.info.get(_TURN) and session.get_nested_transaction() is None:
        raise BatchTransactionTaken(_refusal("called session.commit()", "return"))


@event.listens_for(Session, "after_soft_rollback")
def _refuse_rollback(session: Session, previous: SessionTransaction) -> None:
    # Too late to keep the transaction, early enough that nothing after it runs unfenced. A
    # savepoint's rollback (and its release, which ends here too) is the author's own.
    if session.info.get(_TURN) and not previous.nested:
        raise BatchTransactionTaken(_refusal("called session.rollback()", "raise"))
