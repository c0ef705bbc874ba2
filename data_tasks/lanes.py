"""The task_lanes table: the lanes a data task runs as, each with its own cursor and epoch.

A lane is a contiguous key range of one run: the whole key space for an unsharded task, the
whole task for one-shot and custom ones, one of N ranges for `parallel=N`. Each lane has its own
cursor, progress, attempts, heartbeat and epoch (its fencing token, bumped by every chunk that
starts it). Batches write only their lane's row; the task record is the summary operators read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    Engine,
    Integer,
    Select,
    String,
    Table,
    Text,
    Update,
    bindparam,
    delete,
    exists,
    func,
    select,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import Mapped, Session, mapped_column

from data_tasks.cursors import cursor_json
from data_tasks.data_task import KeyRange
from data_tasks.records import (
    MYSQL_DIALECTS,
    Base,
    TaskRecord,
    UTCDateTime,
    decode_cursor,
    encode_cursor,
    utcnow,
)
from data_tasks.status import Status


class LaneStatus(StrEnum):
    """Where one lane is: waiting for its chunk job, in one, finished or out of attempts."""

    ENQUEUED = "enqueued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


# Canonical JSON text, compared for equality by the compare-and-set: on MySQL/MariaDB it gets
# a binary collation, since the default one is case-insensitive ('"Abc"' would equal '"abc"').
JSON_TEXT = Text().with_variant(mysql.TEXT(collation="utf8mb4_bin"), *MYSQL_DIALECTS)


class TaskLane(Base):
    """One lane of a data task's run: its key range, cursor, progress and fencing epoch."""

    __tablename__ = "task_lanes"

    version: Mapped[str] = mapped_column(String(14), primary_key=True)
    lane: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Bumped by every chunk that starts the lane; a batch commits only with its chunk's epoch.
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default=LaneStatus.ENQUEUED.value)
    # False until the run's start has cut the key ranges (lane 0 of a new run does it).
    planned: Mapped[bool] = mapped_column(Boolean, default=False)
    # Canonical JSON keys: the lane covers (lower, upper]; null is open on that side.
    lower: Mapped[str | None] = mapped_column(JSON_TEXT, nullable=True)
    upper: Mapped[str | None] = mapped_column(JSON_TEXT, nullable=True)
    # Canonical JSON text: where the lane's next batch starts.
    cursor: Mapped[str | None] = mapped_column(JSON_TEXT, nullable=True)
    processed: Mapped[int] = mapped_column(BigInteger, default=0)
    total: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    batch_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Failed attempts since the lane's last committed batch.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    @property
    def state(self) -> LaneStatus:
        """The status as the enum."""
        return LaneStatus(self.status)

    @property
    def total_estimated(self) -> bool:
        """True until the lane has finished: its total is the estimate (or the count) made when
        the run started; a finished lane's total is the keys or rows it processed."""
        return self.total is not None and self.state != LaneStatus.SUCCEEDED

    @property
    def cursor_value(self) -> Any:
        """The decoded cursor."""
        return decode_cursor(self.cursor)

    def as_dict(self) -> dict[str, Any]:
        """One lane, JSON-ready."""
        return {
            "lane": self.lane,
            "status": self.status,
            "epoch": self.epoch,
            "processed": self.processed,
            "total": self.total,
            "total_estimated": self.total_estimated,
            # JSON as stored: a uuid, a timestamp or a decimal key stays its tagged form.
            "cursor": cursor_json(self.cursor),
            "lower": cursor_json(self.lower),
            "upper": cursor_json(self.upper),
            "attempts": self.attempts,
            "last_error": self.last_error,
            "heartbeat_at": self.heartbeat_at.isoformat() if self.heartbeat_at else None,
        }


def first_lane(version: str) -> TaskLane:
    """Lane 0 of a new run, not yet planned: its chunk cuts the key ranges."""
    return TaskLane(
        version=version,
        lane=0,
        epoch=0,
        status=LaneStatus.ENQUEUED.value,
        planned=False,
        processed=0,
        attempts=0,
    )


def prepare_run(session: Session, version: str, restart: bool) -> list[tuple[int, int]]:
    """At a claim: make the lanes that must run enqueued; returns their (lane, epoch).

    A new run (or a restart) gets one unplanned lane; a resumed run re-enqueues every lane
    that has not succeeded at a new epoch, which fences any chunk of the run before. A run
    whose lanes all succeeded (its check failed) re-enqueues lane 0, which finishes at once.
    """
    table = cast(Table, TaskLane.__table__)
    if restart:
        session.execute(delete(table).where(table.c.version == version))
    lanes = list(session.scalars(select(TaskLane).where(TaskLane.version == version)))
    if not lanes:
        session.add(first_lane(version))
        session.flush()
        return [(0, 0)]
    open_lanes = [lane for lane in lanes if lane.state != LaneStatus.SUCCEEDED] or [
        min(lanes, key=lambda lane: lane.lane)
    ]
    numbers = [lane.lane for lane in open_lanes]
    session.execute(
        update(table)
        .where(table.c.version == version, table.c.lane.in_(numbers))
        .values(epoch=table.c.epoch + 1, status=LaneStatus.ENQUEUED.value, attempts=0)
    )
    return [(lane.lane, lane.epoch + 1) for lane in open_lanes]


def add_lanes(
    session: Session, version: str, epoch: int, ranges: Sequence[KeyRange]
) -> list[tuple[int, int]] | None:
    """Record a new run's key ranges: lane 0 (running at `epoch`) takes the first, new lanes
    the rest. Returns the new lanes' (lane, epoch), or None when lane 0 was fenced meanwhile."""
    first = ranges[0]
    planned = session.execute(
        update(TaskLane)
        .where(
            TaskLane.version == version,
            TaskLane.lane == 0,
            TaskLane.epoch == epoch,
            TaskLane.status == LaneStatus.RUNNING.value,
            TaskLane.planned.is_(False),
        )
        .values(
            planned=True,
            upper=encode_cursor(first.upper),
            total=first.total,
        )
        .execution_options(synchronize_session=False)
    )
    if planned.rowcount != 1:  # type: ignore[attr-defined]
        return None
    now = utcnow()
    session.add_all(
        TaskLane(
            version=version,
            lane=number,
            epoch=0,
            status=LaneStatus.ENQUEUED.value,
            planned=True,
            lower=encode_cursor(part.lower),
            upper=encode_cursor(part.upper),
            cursor=encode_cursor(part.lower),
            processed=0,
            total=part.total,
            attempts=0,
            heartbeat_at=now,
        )
        for number, part in enumerate(ranges[1:], start=1)
    )
    return [(number, 0) for number in range(1, len(ranges))]


def run_is_live() -> Any:
    """The fence on the record: still running at the run epoch the chunk started under."""
    return exists().where(
        TaskRecord.version == bindparam("l_version"),
        TaskRecord.epoch == bindparam("l_run_epoch"),
        TaskRecord.status == Status.RUNNING.value,
    )


def _lane_is(table: Table, status: LaneStatus) -> Any:
    return (
        (table.c.version == bindparam("l_version"))
        & (table.c.lane == bindparam("l_lane"))
        & (table.c.epoch == bindparam("l_epoch"))
        & (table.c.status == status.value)
    )


def _start_statement() -> Update:
    """enqueued -> running with the next epoch: the one chunk a lane's job may start."""
    table = cast(Table, TaskLane.__table__)
    return (
        update(table)
        .where(_lane_is(table, LaneStatus.ENQUEUED))
        .values(
            status=LaneStatus.RUNNING.value,
            epoch=table.c.epoch + 1,
            heartbeat_at=bindparam("l_beat", type_=table.c.heartbeat_at.type),
            worker=bindparam("l_worker"),
        )
    )


START = _start_statement()


def _advance_statement(from_start: bool) -> Update:
    """UPDATE task_lanes ... WHERE the lane and its run are as this chunk holds them."""
    table = cast(Table, TaskLane.__table__)
    cursor = table.c.cursor
    return (
        update(table)
        .where(_lane_is(table, LaneStatus.RUNNING))
        .where(cursor.is_(None) if from_start else cursor == bindparam("l_old"))
        .where(run_is_live())
        .values(
            cursor=bindparam("l_new"),
            processed=table.c.processed + bindparam("l_size"),
            heartbeat_at=bindparam("l_beat", type_=table.c.heartbeat_at.type),
            attempts=0,
            batch_size=bindparam("l_batch_size"),
        )
    )


# Built once: the compare-and-set runs once per batch, and building it cost as much as the
# round trip itself.
ADVANCE_FROM_START = _advance_statement(from_start=True)
ADVANCE = _advance_statement(from_start=False)


def advance_over(keys: Select[Any], from_start: bool) -> Update:
    """The compare-and-set that also plans a keyset batch, in one statement and round trip.

    `keys` reads the batch's keys, one integer column labelled k0; the statement moves the
    cursor to the largest and returns `size`, `first_0` and `last_0`. An empty batch leaves
    the cursor where it is and returns size 0; a fenced chunk gets no row. One pass of
    count/min/max over the keys: cheaper than the keys' round trip to the runner and back.
    """
    table = cast(Table, TaskLane.__table__)
    batch = keys.cte("data_tasks_batch")
    key = batch.c.k0
    edges = select(
        func.count().label("size"), func.min(key).label("first_0"), func.max(key).label("last_0")
    ).cte("data_tasks_edges")
    size, first, last = (select(column).scalar_subquery() for column in edges.c)
    # An integer's canonical JSON text (see cursors.py) is its decimal text, as SQL writes it.
    last_cursor = select(sql_cast(edges.c.last_0, String)).scalar_subquery()
    return (
        update(table)
        .where(_lane_is(table, LaneStatus.RUNNING))
        .where(table.c.cursor.is_(None) if from_start else table.c.cursor == bindparam("l_old"))
        .where(run_is_live())
        .values(
            cursor=func.coalesce(last_cursor, table.c.cursor),
            processed=table.c.processed + size,
            heartbeat_at=bindparam("l_beat", type_=table.c.heartbeat_at.type),
            attempts=0,
            batch_size=bindparam("l_batch_size"),
        )
        .returning(size.label("size"), first.label("first_0"), last.label("last_0"))
    )


def _leave_statement(to: LaneStatus) -> Update:
    table = cast(Table, TaskLane.__table__)
    statement = (
        update(table)
        .where(_lane_is(table, LaneStatus.RUNNING))
        .where(run_is_live())
        .values(status=to.value)
    )
    if to == LaneStatus.SUCCEEDED:
        # A lane finishes only at the cursor its chunk reached (:l_old): a database that lost
        # the last batches' commits (a failover to a replica behind the primary) still has
        # them to do.
        statement = statement.where(table.c.cursor.is_not_distinct_from(bindparam("l_old")))
    return statement


# A running lane hands over to a successor job, finishes, or fails: always fenced.
LEAVE: dict[LaneStatus, Update] = {
    status: _leave_statement(status) for status in LaneStatus if status != LaneStatus.RUNNING
}


def lanes_of(engine: Engine, versions: Iterable[str]) -> dict[str, list[TaskLane]]:
    """The lanes of each version, in order (for `status`)."""
    versions = list(versions)
    if not versions:
        return {}
    with Session(engine, expire_on_commit=False) as session:
        rows = session.scalars(
            select(TaskLane)
            .where(TaskLane.version.in_(versions))
            .order_by(TaskLane.version, TaskLane.lane)
        ).all()
        session.expunge_all()
    found: dict[str, list[TaskLane]] = {}
    for row in rows:
        found.setdefault(row.version, []).append(row)
    return found


def totals(session: Session, version: str) -> tuple[int, int | None]:
    """The processed count and the estimated total of a task, summed over its lanes."""
    processed, total = session.execute(
        select(func.coalesce(func.sum(TaskLane.processed), 0), func.sum(TaskLane.total)).where(
            TaskLane.version == version
        )
    ).one()
    return int(processed), None if total is None else int(total)


def lane_line(lane: TaskLane, width: int = 20) -> str:
    """`  lane 0   running   [#####.....] 500/~1000  50.0%` for the status table (~: estimate)."""
    total = lane.total or 0
    percent = min(100.0, 100.0 * lane.processed / total) if total else 100.0
    filled = round(width * percent / 100)
    bar = "#" * filled + "." * (width - filled)
    note = f"  {lane.last_error.splitlines()[0][:60]}" if lane.last_error else ""
    about = "~" if lane.total_estimated else ""
    return (
        f"  lane {lane.lane:<3d}{lane.status:<10s}[{bar}] "
        f"{lane.processed}/{about}{total} {percent:5.1f}%{note}"
    )
