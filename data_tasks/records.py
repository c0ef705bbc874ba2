"""The task_records table: one row per data task, the single source of truth about it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Dialect,
    Integer,
    String,
    Text,
    TypeDecorator,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

# The cursor encoding lives in its own module; these names stay importable from here.
from data_tasks.cursors import decode_cursor as decode_cursor
from data_tasks.cursors import encode_cursor as encode_cursor
from data_tasks.errors import UnknownVersion
from data_tasks.log import log_event
from data_tasks.status import Status, check_transition

# SQLAlchemy's names for MySQL and for MariaDB (a mariadb:// URL).
MYSQL_DIALECTS = ("mysql", "mariadb")


def utcnow() -> datetime:
    """The current time in UTC, as every timestamp in the records is."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC, also on SQLite and MySQL/MariaDB, which
    store no zone: they hold naive UTC, read back as aware UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        """DATETIME(6) on MySQL/MariaDB, whose plain DATETIME drops the fractions of a second."""
        if dialect.name in MYSQL_DIALECTS:
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(self.impl)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Store UTC."""
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
            if dialect.name in ("sqlite", *MYSQL_DIALECTS):
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Read back as aware UTC."""
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    """Declarative base of the runner's own tables."""


class TaskRecord(Base):
    """The state of one data task: status, fencing epoch, cursor, progress and errors."""

    __tablename__ = "task_records"

    version: Mapped[str] = mapped_column(String(14), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=Status.PENDING.value)
    # The run's epoch, bumped by every claim: a chunk commits only while its run is current.
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    # Summed over the lanes when the run ends; task_lanes holds them while it runs.
    processed: Mapped[int] = mapped_column(BigInteger, default=0)
    total: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Failed attempts of the lane that failed last, since its last committed batch.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    traceback: Mapped[str | None] = mapped_column(Text, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # Hash of the task file when it was last claimed: a failed task is retried once it changes.
    source_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    @property
    def state(self) -> Status:
        """The status as the enum."""
        return Status(self.status)

    def as_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (timestamps as ISO 8601, the cursor decoded)."""
        result: dict[str, Any] = {}
        for column in self.__table__.columns:
            value = getattr(self, column.key)
            if isinstance(value, datetime):
                value = value.isoformat()
            result[column.key] = value
        return result


RECORD_FIELDS = tuple(column.key for column in TaskRecord.__table__.columns)


def load_all(session: Session) -> dict[str, TaskRecord]:
    """Every record by version, in one query."""
    return {record.version: record for record in session.scalars(select(TaskRecord))}


def get(session: Session, version: str) -> TaskRecord:
    """The record of a version, or UnknownVersion."""
    record = session.get(TaskRecord, version)
    if record is None:
        raise UnknownVersion(version)
    return record


def insert_missing(session: Session, rows: Iterable[tuple[str, str]]) -> int:
    """Insert pending records for (version, name) pairs, ignoring ones another process inserted."""
    values = [
        {"version": version, "name": name, "status": Status.PENDING.value, "epoch": 0}
        for version, name in rows
    ]
    if not values:
        return 0
    dialect = session.get_bind().dialect.name
    now = utcnow()
    for row in values:
        row.update(processed=0, attempts=0, created_at=now)
    if dialect == "postgresql":
        statement: Any = postgresql.insert(TaskRecord).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite.insert(TaskRecord).on_conflict_do_nothing()
    elif dialect in MYSQL_DIALECTS:
        # Not INSERT IGNORE, which also turns a too-long name into a warning and truncates it.
        statement = mysql.insert(TaskRecord)
        statement = statement.on_duplicate_key_update(version=statement.inserted.version)
    else:
        statement = insert(TaskRecord)
    session.execute(statement, values)
    return len(values)


def move(
    session: Session,
    version: str,
    from_: Status | Iterable[Status],
    to: Status,
    epoch: int | None = None,
    values: Mapping[str, Any] | None = None,
) -> bool:
    """Change a record's status along an allowed edge; the only place that writes status.

    The UPDATE is a compare-and-set on the current status (and epoch, when given): it
    returns False, changing nothing, when another process moved the record first.
    """
    sources = [from_] if isinstance(from_, Status) else list(from_)
    for source in sources:
        check_transition(version, source, to)
    if len(sources) > 1:
        # The history says which status the task left: lock the row and read it.
        seen = session.execute(
            select(TaskRecord.status).where(TaskRecord.version == version).with_for_update()
        ).scalar()
        if seen not in sources:
            return False
        sources = [Status(seen)]
    statement = (
        update(TaskRecord)
        .where(TaskRecord.version == version)
        .where(TaskRecord.status.in_([source.value for source in sources]))
        .values(status=to.value, **dict(values or {}))
        .execution_options(synchronize_session=False)
    )
    if epoch is not None:
        statement = statement.where(TaskRecord.epoch == epoch)
    new_epoch: Any
    processed: Any
    if session.get_bind().dialect.update_returning:
        rows = session.execute(statement.returning(TaskRecord.epoch, TaskRecord.processed)).all()
        if len(rows) != 1:
            return False
        new_epoch, processed = rows[0]
    else:
        if session.execute(statement).rowcount != 1:  # type: ignore[attr-defined]
            return False
        new_epoch, processed = dict(values or {}).get("epoch", epoch), None
    line = {"version": version, "epoch": new_epoch, "from": "|".join(sources), "to": to.value}
    session.info.setdefault(_STATUS_LINES, []).append({**line, "rows": processed})
    for hook in MOVE_HOOKS:
        hook(session, Move(version, sources[0], to))
    return True


@dataclass(frozen=True)
class Move:
    """One status change made by `move`, not yet committed."""

    version: str
    from_status: Status
    to_status: Status


# Called by `move` in the change's own transaction: history.py writes its row from here, so
# a change that is rolled back leaves no history.
MOVE_HOOKS: list[Callable[[Session, Move], None]] = []


# One log line per status change, written once its transaction has committed.
_STATUS_LINES = "data_tasks.status_lines"


@event.listens_for(Session, "after_commit")
def _log_committed_moves(session: Session) -> None:
    for fields in session.info.pop(_STATUS_LINES, []):
        log_event("status", **fields)


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back_moves(session: Session) -> None:
    session.info.pop(_STATUS_LINES, None)
