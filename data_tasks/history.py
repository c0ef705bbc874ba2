"""The task_history table: every status change and operator command, appended, never changed.

records.move calls `write` in the change's own transaction, so a change that is rolled back
leaves no row. Who made it comes from `acting`, which operator commands wrap themselves in;
anything else (a worker, the deploy hook, the sweep) is the host it runs on.
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, Text, insert, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from data_tasks.notifications import NOTIFIED_STATUSES, Notice, queue
from data_tasks.records import MOVE_HOOKS, Base, Move, TaskRecord, UTCDateTime, utcnow
from data_tasks.status import Status

# The variable that names the operator when --actor is not given.
ACTOR_VARIABLE = "DATA_TASKS_ACTOR"
# Who is acting and why, while an operator command runs: (actor, event).
_acting: ContextVar[tuple[str, str] | None] = ContextVar("data_tasks_acting", default=None)


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

    def as_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready."""
        fields = {column.key: getattr(self, column.key) for column in self.__table__.columns}
        return {**fields, "at": self.at.isoformat()}

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
    """Append the change's row in its own transaction, and queue its notification."""
    actor, event = _acting.get() or (socket.gethostname(), "status")
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
    session.execute(
        insert(TaskHistory).values(
            version=change.version,
            at=at,
            epoch=row.epoch,
            from_status=change.from_status.value,
            to_status=change.to_status.value,
            event=event,
            actor=actor[:255],
            error=error,
        )
    )
    if change.to_status.value in NOTIFIED_STATUSES:
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
        )
        queue(session, notice)


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
