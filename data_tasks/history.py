"""The task_history table: every status change and operator command, appended, never changed.

records.move calls `write` in the change's own transaction, so a change that is rolled back
leaves no row. Who made it comes from `acting`, which operator commands wrap themselves in;
anything else (a worker, the deploy hook, the sweep) is the host it runs on.

A change that callbacks are told of is sent at least once: the process that made it runs the
callbacks once it has committed and then marks the row sent; a row left unsent (the process
died first, or a callback raised) is sent again by the sweep, up to NOTICE_ATTEMPTS times.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    CursorResult,
    Engine,
    Index,
    Integer,
    String,
    Text,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, Session, mapped_column

from data_tasks.discovery import Catalog
from data_tasks.errors import DataTaskError
from data_tasks.log import first_line, log_event
from data_tasks.notifications import NOTIFIED_STATUSES, Notice, dispatch
from data_tasks.records import MOVE_HOOKS, Base, Move, TaskRecord, UTCDateTime, utcnow
from data_tasks.status import Status

# The variable that names the operator when --actor is not given.
ACTOR_VARIABLE = "DATA_TASKS_ACTOR"
# Who is acting and why, while an operator command runs: (actor, event).
_acting: ContextVar[tuple[str, str] | None] = ContextVar("data_tasks_acting", default=None)
# How often a notice is sent before it is given up (a callback that keeps raising).
NOTICE_ATTEMPTS = 5
# The session.info key of the notices waiting for their transaction to commit.
_WAITING = "data_tasks.notices"


class TaskHistory(Base):
    """One status change of a data task: when, from what to what, why and by whom."""

    __tablename__ = "task_history"
    __table_args__ = (Index("ix_task_history_version_id", "version", "id"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    version: Mapped[str] = mapped_column(String(14))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The run's epoch after the change.
    epoch: Mapped[int] = mapped_column(Integer)
    lane: Mapped[int | None] = mapped_column(Integer, nullable=True)
    from_status: Mapped[str] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    # "status" for the runner's own changes, else the operator command ("pause", "retry").
    event: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # None while the change's notice waits to be sent; set at once when nobody is told of it.
    notice_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    notice_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    def as_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready."""
        fields = {column.key: getattr(self, column.key) for column in self.__table__.columns}
        sent = self.notice_sent_at.isoformat() if self.notice_sent_at else None
        return {**fields, "at": self.at.isoformat(), "notice_sent_at": sent}

    def line(self) -> str:
        """One line for a terminal: when, the change, the epoch, the event and the actor."""
        at = self.at.strftime("%Y-%m-%d %H:%M:%S")
        lane = f" lane {self.lane}" if self.lane is not None else ""
        error = f"  {self.error}" if self.error else ""
        change = f"{self.from_status} -> {self.to_status}"
        return (
            f"{at}  {self.version}  {change:<22} epoch {self.epoch}{lane}  "
            f"{self.event} by {self.actor}{error}"
        )


def operator(given: str | None = None) -> str:
    """Who runs an operator command: --actor, else DATA_TASKS_ACTOR, else user@host."""
    chosen = (given or os.environ.get(ACTOR_VARIABLE, "")).strip()
    return chosen or f"{getpass.getuser()}@{socket.gethostname()}"


@contextmanager
def acting(actor: str, event: str) -> Iterator[None]:
    """Record the changes made inside as `event` (an operator command) by `actor`."""
    token = _acting.set((actor, event))
    try:
        yield
    finally:
        _acting.reset(token)


def write(session: Session, change: Move) -> None:
    """Append the change's row in its own transaction, and send its notice once it commits."""
    actor, event_name = _acting.get() or (socket.gethostname(), "status")
    row = session.execute(
        select(
            TaskRecord.name,
            TaskRecord.epoch,
            TaskRecord.processed,
            TaskRecord.total,
            TaskRecord.last_error,
        ).where(TaskRecord.version == change.version)
    ).one()
    error = row.last_error if change.to_status == Status.FAILED else None
    at = utcnow()
    told = change.to_status.value in NOTIFIED_STATUSES
    inserted: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        insert(TaskHistory).values(
            version=change.version,
            at=at,
            epoch=row.epoch,
            from_status=change.from_status.value,
            to_status=change.to_status.value,
            event=event_name,
            actor=actor[:255],
            error=error,
            notice_sent_at=None if told else at,
        )
    )
    if told:
        notice = Notice(
            version=change.version,
            name=row.name,
            status=change.to_status.value,
            from_status=change.from_status.value,
            epoch=row.epoch,
            error=error,
            processed=row.processed,
            total=row.total,
            at=at,
            id=int(inserted.inserted_primary_key[0]),  # type: ignore[index]
        )
        session.info.setdefault(_WAITING, []).append(notice)


@event.listens_for(Session, "after_commit")
def _send_committed(session: Session) -> None:
    notices = session.info.pop(_WAITING, [])
    if notices:
        bind = session.get_bind()
        send(bind.engine if isinstance(bind, Connection) else bind, notices)


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop(_WAITING, None)


def send(engine: Engine, notices: Sequence[Notice]) -> None:
    """Run each notice's callbacks, then mark its row sent (or count the attempt); never raises."""
    for notice in notices:
        delivered = dispatch(notice)
        try:
            with engine.begin() as connection:
                # Read, then written in a second statement: MariaDB has no UPDATE RETURNING.
                counted = select(TaskHistory.notice_attempts).where(TaskHistory.id == notice.id)
                attempts = connection.execute(counted).scalar_one() + 1
                settled = delivered or attempts >= NOTICE_ATTEMPTS
                connection.execute(
                    update(TaskHistory)
                    .where(TaskHistory.id == notice.id)
                    .values(notice_attempts=attempts, notice_sent_at=utcnow() if settled else None)
                )
        except SQLAlchemyError as error:
            # Unmarked, the notice is sent again by the sweep: at least once, never lost.
            log_event("notice_unmarked", logging.WARNING, id=notice.id, error=first_line(error))
            continue
        if not delivered:
            outcome = "notice_given_up" if attempts >= NOTICE_ATTEMPTS else "notice_sent_later"
            log_event(outcome, logging.WARNING, version=notice.version, attempts=attempts)


def send_unsent(engine: Engine, catalog: Catalog, older_than_seconds: float) -> int:
    """Send again the notices left unsent for longer than the given time; how many were sent.

    The sweep calls it: the process that made a change gets that long to send its own notice.
    """
    since = utcnow() - timedelta(seconds=older_than_seconds)
    with Session(engine) as session:
        unsent = session.execute(
            select(TaskHistory, TaskRecord.name, TaskRecord.processed, TaskRecord.total)
            .join(TaskRecord, TaskRecord.version == TaskHistory.version)
            .where(TaskHistory.notice_sent_at.is_(None), TaskHistory.at < since)
            .order_by(TaskHistory.id)
        ).all()
    notices = [
        Notice(
            version=row.version,
            name=name,
            status=row.to_status,
            from_status=row.from_status,
            epoch=row.epoch,
            error=row.error,
            processed=processed,
            total=total,
            at=row.at,
            id=row.id,
        )
        for row, name, processed, total in unsent
    ]
    for notice in notices:
        try:
            # Loading the file registers the task's own callbacks in this process.
            catalog.task(notice.version)
        except DataTaskError as error:
            missing = first_line(error)
            log_event("notice_task_missing", logging.WARNING, version=notice.version, error=missing)
    send(engine, notices)
    return len(notices)


MOVE_HOOKS.append(write)


def entries(
    session: Session, version: str | None = None, limit: int | None = None
) -> list[TaskHistory]:
    """History rows, newest first: of one version, or of every task."""
    query = select(TaskHistory).order_by(TaskHistory.id.desc())
    if version is not None:
        query = query.where(TaskHistory.version == version)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))
