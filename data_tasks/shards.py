"""Parallel shards: a task declared with parallel=N runs as N key ranges side by side.

At its claim, the task's key range is split into N shards, each a row of task_shards with its
own cursor and progress, and one chunk job per shard is published carrying (version, epoch,
shard). The task record stays `running` at that epoch meanwhile. Each batch of a shard
commits with a compare-and-set on its shard row (version, shard, epoch, cursor) that also
requires the record to be running at that epoch, so a pause, a cancel or a reclaim (a new
epoch) fences every shard at its next batch. The task succeeds when every shard has.

A shard whose worker died is picked up again when the record is reclaimed: shards beat the
record's heartbeat while they run, so the reclaim comes once none of them does.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast

from redis.exceptions import RedisError
from sqlalchemy import (
    BigInteger,
    Engine,
    Integer,
    String,
    Table,
    Text,
    Update,
    bindparam,
    exists,
    func,
    literal_column,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from data_tasks.coordination import TaskLock
from data_tasks.data_task import Batch, DataTask
from data_tasks.log import log_event
from data_tasks.publisher import ChunkMessage
from data_tasks.records import (
    Base,
    TaskRecord,
    UTCDateTime,
    decode_cursor,
    encode_cursor,
    move,
    utcnow,
)
from data_tasks.runner import (
    PROGRESS_INTERVAL_SECONDS,
    RENEW_INTERVAL_SECONDS,
    Chunk,
    Fenced,
    _adapt_batch_size,
    _finish,
)
from data_tasks.runtime import Runtime
from data_tasks.shapes import KeysetBackfill, RowIteration
from data_tasks.status import Status

RUNNING = "running"
SUCCEEDED = "succeeded"


class TaskShard(Base):
    """One key range of a sharded data task: its cursor, progress and fencing epoch."""

    __tablename__ = "task_shards"

    version: Mapped[str] = mapped_column(String(14), primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The record's epoch when this shard's jobs were published; older jobs are fenced.
    epoch: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=RUNNING)
    # Canonical JSON keys: the shard covers (lower, upper]; null is open on that side.
    lower: Mapped[str | None] = mapped_column(Text, nullable=True)
    upper: Mapped[str | None] = mapped_column(Text, nullable=True)
    cursor: Mapped[str | None] = mapped_column(Text, nullable=True)
    processed: Mapped[int] = mapped_column(BigInteger, default=0)
    total: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    batch_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


def is_sharded(task: DataTask) -> bool:
    """True for a task that runs as parallel shards."""
    return task.options.parallel > 1 and isinstance(task, KeysetBackfill | RowIteration)


def fan_out(runtime: Runtime, task: DataTask, chunk: Chunk) -> dict[str, Any]:
    """At a claim: split the keys into shards (once), then publish a job per unfinished shard."""
    with runtime.session() as session, session.begin():
        shards = list(
            session.scalars(
                select(TaskShard)
                .where(TaskShard.version == chunk.version)
                .order_by(TaskShard.shard)
            )
        )
        if not shards:
            shards = _split(session, task, chunk)
        else:
            # A new claim (a retry, a reclaim): the new epoch fences every job of the old one.
            session.execute(
                update(TaskShard)
                .where(TaskShard.version == chunk.version, TaskShard.status != SUCCEEDED)
                .values(epoch=chunk.epoch, attempts=0)
                .execution_options(synchronize_session=False)
            )
        unfinished = [shard.shard for shard in shards if shard.status != SUCCEEDED]
    if not unfinished:
        return _finish(runtime, task, chunk)
    for number in unfinished:
        runtime.publisher.publish(ChunkMessage(chunk.version, chunk.epoch, shard=number))
    log_event("sharded", version=chunk.version, epoch=chunk.epoch, shards=len(unfinished))
    return chunk.summary("sharded", shards=unfinished)


def _split(session: Session, task: DataTask, chunk: Chunk) -> list[TaskShard]:
    """Cut the keys into `parallel` ranges of about equal numbers of rows, and record them."""
    total = chunk.total
    if total is None:
        total = task.estimate_total(session, None) or 0
    parts = task.options.parallel
    offsets = sorted({total * part // parts for part in range(1, parts)} - {0})
    # The last key of each range but the last, read at its offset in key order.
    bounds = [_key_at(session, task, offset - 1) for offset in offsets]
    uppers: list[Any] = [*bounds, None]
    lowers: list[Any] = [None, *bounds]
    sizes = [b - a for a, b in zip([0, *offsets], [*offsets, total], strict=True)]
    now = utcnow()
    shards = [
        TaskShard(
            version=chunk.version,
            shard=number,
            epoch=chunk.epoch,
            status=RUNNING,
            lower=encode_cursor(lower),
            upper=encode_cursor(upper),
            cursor=encode_cursor(lower),
            processed=0,
            total=size,
            attempts=0,
            heartbeat_at=now,
        )
        for number, (lower, upper, size) in enumerate(zip(lowers, uppers, sizes, strict=True))
    ]
    session.add_all(shards)
    return shards


def _key_at(session: Session, task: DataTask, offset: int) -> Any:
    """The key at a 0-based position of the task's keys in order."""
    if isinstance(task, KeysetBackfill):
        query = select(task.key).where(*task._filters(None)).order_by(task.key)
        return session.execute(query.offset(offset).limit(1)).scalar_one()
    assert isinstance(task, RowIteration)
    row = session.execute(task.query.order_by(task.key).offset(offset).limit(1)).one()
    return row[task.key_index]


def _plan(session: Session, task: DataTask, cursor: Any, upper: Any, size: int) -> Batch | None:
    """The next batch of a shard: like the task's own plan, but never past the shard's end."""
    if isinstance(task, KeysetBackfill):
        filters = task._filters(cursor)
        if upper is not None:
            filters.append(task.key <= upper)
        keys = select(task.key.label("k")).where(*filters).order_by(task.key).limit(size).subquery()
        low, high, count = session.execute(
            select(func.min(keys.c.k), func.max(keys.c.k), func.count(literal_column("*")))
        ).one()
        if not count:
            return None
        return Batch(next_cursor=high, size=int(count), payload=(low, high))
    assert isinstance(task, RowIteration)
    query = task.query
    if cursor is not None:
        query = query.where(task.key > cursor)
    if upper is not None:
        query = query.where(task.key <= upper)
    rows = session.execute(query.order_by(task.key).limit(size)).all()
    if not rows:
        return None
    return Batch(next_cursor=rows[-1][task.key_index], size=len(rows), payload=rows)


def run_shard(runtime: Runtime, task: DataTask, message: ChunkMessage) -> dict[str, Any]:
    """Run one chunk of one shard; returns a summary whose `outcome` says how it ended."""
    number = cast(int, message.shard)
    name = f"{message.version}:shard:{number}"
    lock = runtime.coordinator.task_lock(name, runtime.hostname)
    ids: dict[str, Any] = {"version": message.version, "epoch": message.epoch, "shard": number}
    if not lock.acquire():
        log_event("duplicate", version=message.version, epoch=message.epoch, shard=number)
        return {"outcome": "duplicate", **ids}
    try:
        started = _start_shard(runtime, task, message)
        if started is None:
            return {"outcome": "stale", **ids}
        chunk, upper = started
        summary = _run_shard_batches(runtime, task, chunk, number, upper, lock)
        log_event(
            "shard_chunk_done",
            version=chunk.version,
            epoch=chunk.epoch,
            shard=number,
            outcome=summary["outcome"],
            batches=chunk.batches,
            rows=chunk.rows,
        )
        return summary
    finally:
        try:
            lock.release()
        except RedisError:
            pass  # It expires by itself; the epoch fences anyone who outlives it.


def _start_shard(
    runtime: Runtime, task: DataTask, message: ChunkMessage
) -> tuple[Chunk, Any] | None:
    """The shard's state, or None when the message is stale (an older epoch, or finished)."""
    with runtime.session() as session:
        shard = session.get(TaskShard, (message.version, message.shard))
        record = session.get(TaskRecord, message.version)
    current = (
        shard is not None
        and record is not None
        and shard.status == RUNNING
        and shard.epoch == message.epoch
        and record.status == Status.RUNNING.value
        and record.epoch == message.epoch
    )
    if not current or shard is None:
        log_event(
            "stale_message", version=message.version, epoch=message.epoch, shard=message.shard
        )
        return None
    chunk = Chunk(
        version=message.version,
        epoch=message.epoch,
        cursor=decode_cursor(shard.cursor),
        processed=shard.processed,
        total=shard.total,
        batch_size=shard.batch_size or task.options.batch_size,
        started=time.monotonic(),
    )
    return chunk, decode_cursor(shard.upper)


def _run_shard_batches(
    runtime: Runtime, task: DataTask, chunk: Chunk, number: int, upper: Any, lock: TaskLock
) -> dict[str, Any]:
    budget = task.options.chunk_seconds or runtime.settings.chunk_seconds
    renew_every = min(RENEW_INTERVAL_SECONDS, lock.milliseconds / 10_000)
    last_renewal = last_beat = time.monotonic()
    with runtime.session() as session:
        while True:
            if chunk.batches and (
                time.monotonic() - chunk.started >= budget or runtime.should_stop()
            ):
                return _continue_later(runtime, chunk, number, "budget spent")
            if task.throttles:
                backoff = task.backoff_seconds(session)
                session.rollback()  # the throttle's read must not hold a snapshot open
                if backoff > 0:
                    time.sleep(min(backoff, max(0.0, budget - (time.monotonic() - chunk.started))))
                    return _continue_later(runtime, chunk, number, "throttled")
            try:
                finished = _run_one_batch(session, task, chunk, number, upper)
            except Fenced:
                session.rollback()
                log_event("fenced", version=chunk.version, epoch=chunk.epoch, shard=number)
                return chunk.summary("fenced", shard=number)
            except Exception as error:
                session.rollback()
                return _record_failure(runtime, chunk, number, error)
            if finished:
                return _finish_shard(runtime, task, chunk, number)
            now = time.monotonic()
            if now - last_beat >= PROGRESS_INTERVAL_SECONDS:
                last_beat = now
                _beat(runtime, chunk)
                if runtime.on_progress is not None:
                    runtime.on_progress(chunk.summary("running", shard=number))
            if now - last_renewal >= renew_every:
                last_renewal = now
                try:
                    owned, shutting_down = lock.renew_and_poll()
                except RedisError:
                    return _continue_later(runtime, chunk, number, "Redis unreachable")
                if not owned and not lock.acquire():
                    return chunk.summary("lost_lock", shard=number)
                if shutting_down:
                    return _continue_later(runtime, chunk, number, "worker shutting down")


def _run_one_batch(session: Session, task: DataTask, chunk: Chunk, number: int, upper: Any) -> bool:
    """Plan, fence, apply and commit one batch of the shard; True when the shard is done."""
    began = time.monotonic()
    with session.begin():
        batch = _plan(session, task, chunk.cursor, upper, chunk.batch_size)
        if batch is None:
            return True
        parameters = {
            "s_version": chunk.version,
            "s_shard": number,
            "s_epoch": chunk.epoch,
            "s_old": encode_cursor(chunk.cursor),
            "s_new": encode_cursor(batch.next_cursor),
            "s_size": batch.size,
            "s_beat": utcnow(),
            "s_batch_size": chunk.batch_size,
        }
        statement = _CAS_FROM_START if chunk.cursor is None else _CAS
        if session.connection().execute(statement, parameters).rowcount != 1:
            raise Fenced()
        task.apply(session, batch)
    chunk.cursor = batch.next_cursor
    chunk.processed += batch.size
    chunk.rows += batch.size
    chunk.batches += 1
    _adapt_batch_size(task, chunk, batch, time.monotonic() - began)
    return False


def _record_is_running() -> Any:
    """The fence on the record: still running at the epoch the shard was published with."""
    return exists().where(
        TaskRecord.version == bindparam("s_version"),
        TaskRecord.epoch == bindparam("s_epoch"),
        TaskRecord.status == Status.RUNNING.value,
    )


def _cas_statement(from_start: bool) -> Update:
    """UPDATE task_shards ... WHERE the shard and its record are as this runner holds them."""
    shards = cast(Table, TaskShard.__table__)
    cursor = shards.c.cursor
    return (
        update(shards)
        .where(shards.c.version == bindparam("s_version"))
        .where(shards.c.shard == bindparam("s_shard"))
        .where(shards.c.epoch == bindparam("s_epoch"))
        .where(shards.c.status == RUNNING)
        .where(cursor.is_(None) if from_start else cursor == bindparam("s_old"))
        .where(_record_is_running())
        .values(
            cursor=bindparam("s_new"),
            processed=shards.c.processed + bindparam("s_size"),
            heartbeat_at=bindparam("s_beat", type_=shards.c.heartbeat_at.type),
            attempts=0,
            batch_size=bindparam("s_batch_size"),
        )
    )


_CAS_FROM_START = _cas_statement(from_start=True)
_CAS = _cas_statement(from_start=False)


def _beat(runtime: Runtime, chunk: Chunk) -> None:
    """Keep the record alive for the sweep, and its progress the sum of its shards'."""
    done = (
        select(func.coalesce(func.sum(TaskShard.processed), 0))
        .where(TaskShard.version == chunk.version)
        .scalar_subquery()
    )
    with runtime.session() as session, session.begin():
        session.execute(
            update(TaskRecord)
            .where(
                TaskRecord.version == chunk.version,
                TaskRecord.epoch == chunk.epoch,
                TaskRecord.status == Status.RUNNING.value,
            )
            .values(heartbeat_at=utcnow(), processed=done)
            .execution_options(synchronize_session=False)
        )


def _continue_later(runtime: Runtime, chunk: Chunk, number: int, reason: str) -> dict[str, Any]:
    """Hand the shard to a successor job at its cursor; the record stays running."""
    _beat(runtime, chunk)
    runtime.publisher.publish(ChunkMessage(chunk.version, chunk.epoch, shard=number))
    return chunk.summary("continued", shard=number, reason=reason)


def _finish_shard(runtime: Runtime, task: DataTask, chunk: Chunk, number: int) -> dict[str, Any]:
    """Mark the shard succeeded; the last shard to finish finishes the task."""
    with runtime.session() as session, session.begin():
        # Locking the record serialises the shards' finishes, so exactly one sees none left.
        record = session.execute(
            select(TaskRecord.epoch, TaskRecord.status)
            .where(TaskRecord.version == chunk.version)
            .with_for_update()
        ).one_or_none()
        if record is None or tuple(record) != (chunk.epoch, Status.RUNNING.value):
            return chunk.summary("fenced", shard=number)
        moved = session.execute(
            update(TaskShard)
            .where(
                TaskShard.version == chunk.version,
                TaskShard.shard == number,
                TaskShard.epoch == chunk.epoch,
                TaskShard.status == RUNNING,
            )
            .values(status=SUCCEEDED, finished_at=utcnow())
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
        left = session.execute(
            select(func.count())
            .select_from(TaskShard)
            .where(TaskShard.version == chunk.version, TaskShard.status != SUCCEEDED)
        ).scalar_one()
    if moved != 1:
        return chunk.summary("fenced", shard=number)
    _beat(runtime, chunk)
    log_event("shard_succeeded", version=chunk.version, epoch=chunk.epoch, shard=number)
    if left:
        return chunk.summary("shard_succeeded", shard=number, shards_left=int(left))
    with runtime.session() as session:
        record_row = session.get(TaskRecord, chunk.version)
        if record_row is not None:
            chunk.processed = record_row.processed
    return _finish(runtime, task, chunk)


def _record_failure(
    runtime: Runtime, chunk: Chunk, number: int, error: BaseException
) -> dict[str, Any]:
    """Count a failed attempt of the shard; retry it with backoff, or fail the task."""
    summary = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error) else ''}"
    trace = "".join(traceback.format_exception(error))
    with runtime.session() as session, session.begin():
        session.execute(
            update(TaskShard)
            .where(TaskShard.version == chunk.version, TaskShard.shard == number)
            .values(attempts=TaskShard.attempts + 1, last_error=summary)
            .execution_options(synchronize_session=False)
        )
        attempts = session.execute(
            select(TaskShard.attempts).where(
                TaskShard.version == chunk.version, TaskShard.shard == number
            )
        ).scalar_one()
    task_attempts = runtime.catalog.task(chunk.version).options.max_attempts
    limit = task_attempts or runtime.settings.max_attempts
    log_event("batch_failed", version=chunk.version, shard=number, attempt=attempts, error=summary)
    if attempts >= limit:
        values = {
            "attempts": attempts,
            "last_error": f"shard {number}: {summary}",
            "traceback": trace,
            "finished_at": utcnow(),
        }
        with runtime.session() as session, session.begin():
            move(session, chunk.version, Status.RUNNING, Status.FAILED, chunk.epoch, values)
        return chunk.summary("failed", shard=number, error=summary, attempts=attempts)
    settings = runtime.settings
    delay = min(settings.retry_max_seconds, settings.retry_base_seconds * 2 ** (attempts - 1))
    message = ChunkMessage(chunk.version, chunk.epoch, shard=number)
    runtime.publisher.publish(message, countdown=delay)
    return chunk.summary("retrying", shard=number, error=summary, attempts=attempts)


def shards_of(engine: Engine, versions: Iterable[str]) -> dict[str, list[TaskShard]]:
    """The shards of each sharded version, in order (for `status`)."""
    versions = list(versions)
    if not versions:
        return {}
    with Session(engine) as session:
        rows: Sequence[TaskShard] = session.scalars(
            select(TaskShard)
            .where(TaskShard.version.in_(versions))
            .order_by(TaskShard.version, TaskShard.shard)
        ).all()
        session.expunge_all()
    found: dict[str, list[TaskShard]] = {}
    for row in rows:
        found.setdefault(row.version, []).append(row)
    return found


def shard_dict(shard: TaskShard) -> dict[str, Any]:
    """One shard, JSON-ready."""
    return {
        "shard": shard.shard,
        "status": shard.status,
        "epoch": shard.epoch,
        "processed": shard.processed,
        "total": shard.total,
        "cursor": decode_cursor(shard.cursor),
        "lower": decode_cursor(shard.lower),
        "upper": decode_cursor(shard.upper),
        "attempts": shard.attempts,
        "last_error": shard.last_error,
    }


def shard_line(shard: TaskShard, width: int = 20) -> str:
    """`  shard 0  running    [#####.....] 500/1000  50.0%` for the status table."""
    total = shard.total or 0
    percent = min(100.0, 100.0 * shard.processed / total) if total else 100.0
    filled = round(width * percent / 100)
    bar = "#" * filled + "." * (width - filled)
    note = f"  {shard.last_error.splitlines()[0][:60]}" if shard.last_error else ""
    return (
        f"  shard {shard.shard:<3d}{shard.status:<10s}[{bar}] "
        f"{shard.processed}/{total} {percent:5.1f}%{note}"
    )
