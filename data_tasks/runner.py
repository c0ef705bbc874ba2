"""The chunk job's logic: run one data task for a bounded time, batch by batch.

Each batch commits its writes together with the cursor advance, in a transaction opened by
a compare-and-set on (version, epoch, cursor). Zero rows updated means another runner owns
the task: roll back and stop. The Celery job in worker/ is a shell around `run_chunk`.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, replace
from typing import Any, cast

from redis.exceptions import RedisError
from sqlalchemy import Table, Update, bindparam, select, update
from sqlalchemy.orm import Session

from data_tasks.coordination import TaskLock
from data_tasks.data_task import FINISHED, Batch, DataTask
from data_tasks.errors import InvalidTaskFile, UnknownVersion
from data_tasks.log import log_event
from data_tasks.publisher import ChunkMessage
from data_tasks.records import TaskRecord, encode_cursor, get, move, utcnow
from data_tasks.runtime import Runtime
from data_tasks.status import Status

# Adaptive batch sizes change by at most these factors per batch (GitLab's optimizer: 1.2x up).
GROW_LIMIT = 1.2
SHRINK_LIMIT = 0.5
PROGRESS_INTERVAL_SECONDS = 1.0
# The lease is renewed (and the shutdown flag polled) at most this often, and at least ten
# times per lease.
RENEW_INTERVAL_SECONDS = 0.25


class Fenced(Exception):
    """Another runner owns the task now (its epoch, cursor or status moved)."""


@dataclass
class Chunk:
    """The state of one chunk job while it runs."""

    version: str
    epoch: int
    cursor: Any
    processed: int
    total: int | None
    batch_size: int
    started: float
    batches: int = 0
    rows: int = 0

    def summary(self, outcome: str, **extra: Any) -> dict[str, Any]:
        """What the chunk job returns (and Flower shows)."""
        elapsed = time.monotonic() - self.started
        return {
            "outcome": outcome,
            "version": self.version,
            "epoch": self.epoch,
            "batches": self.batches,
            "rows": self.rows,
            "processed": self.processed,
            "total": self.total,
            "seconds": round(elapsed, 3),
            **extra,
        }


def run_chunk(runtime: Runtime, message: ChunkMessage) -> dict[str, Any]:
    """Run one chunk of a data task; returns a summary whose `outcome` says how it ended."""
    try:
        task = runtime.catalog.task(message.version)
    except UnknownVersion:
        return _pass_on_unknown(runtime, message)
    except InvalidTaskFile as error:
        _fail_unstarted(runtime, message, str(error), "invalid_task_file")
        return {"outcome": "invalid_task_file", "version": message.version, "error": str(error)}
    if message.shard is not None:
        from data_tasks.shards import run_shard  # shards build on this module

        return run_shard(runtime, task, message)

    lock = runtime.coordinator.task_lock(message.version, runtime.hostname)
    if not lock.acquire():
        if _is_current(runtime, message):
            # The lease is held by a run this message supersedes (a paused runner woken up,
            # about to be fenced): try again shortly instead of dropping the live job.
            runtime.publisher.publish(message, countdown=runtime.settings.retry_base_seconds)
            log_event("lock_busy", version=message.version, epoch=message.epoch)
            return {"outcome": "lock_busy", "version": message.version, "epoch": message.epoch}
        log_event("duplicate", version=message.version, epoch=message.epoch)
        return {"outcome": "duplicate", "version": message.version, "epoch": message.epoch}
    try:
        try:
            runtime.coordinator.unmark_queued(message.version, message.epoch)
        except RedisError:
            pass  # The marker expires; until then the sweep takes the job for queued.
        chunk = _start(runtime, task, message)
        if chunk is None:
            return {"outcome": "stale", "version": message.version, "epoch": message.epoch}
        if task.options.parallel > 1:
            from data_tasks.shards import fan_out, is_sharded

            if is_sharded(task):
                return fan_out(runtime, task, chunk)
        summary = _run_batches(runtime, task, chunk, lock)
        _log_chunk(summary)
        return summary
    finally:
        try:
            lock.release()
        except RedisError:
            pass  # It expires by itself; the epoch fences anyone who outlives it.


def _log_chunk(summary: dict[str, Any]) -> None:
    """The one line per chunk: how it ended, with its batches, rows and duration."""
    log_event(
        "chunk",
        version=summary["version"],
        epoch=summary["epoch"],
        outcome=summary["outcome"],
        batches=summary["batches"],
        rows=summary["rows"],
        duration=summary["seconds"],
        processed=summary["processed"],
        total=summary["total"],
        reason=summary.get("reason"),
        error=summary.get("error"),
    )


def _is_current(runtime: Runtime, message: ChunkMessage) -> bool:
    """True when the record still waits, enqueued, for exactly this message's epoch."""
    with runtime.session() as session:
        record = session.get(TaskRecord, message.version)
        return bool(
            record is not None
            and record.status == Status.ENQUEUED.value
            and record.epoch == message.epoch
        )


def _start(runtime: Runtime, task: DataTask, message: ChunkMessage) -> Chunk | None:
    """Claim the run with a new epoch; None when the message is stale or a duplicate."""
    epoch = message.epoch + 1
    now = utcnow()
    with runtime.session() as session, session.begin():
        values = {"epoch": epoch, "heartbeat_at": now, "worker": runtime.hostname}
        if not move(session, task.version, Status.ENQUEUED, Status.RUNNING, message.epoch, values):
            record = session.get(TaskRecord, task.version)
            seen = f"{record.status} at epoch {record.epoch}" if record else "no record"
            log_event("stale_message", version=task.version, epoch=message.epoch, record=seen)
            return None
        record = get(session, task.version)
        if record.started_at is None:
            record.started_at = now
        if record.total is None:
            # Estimated once per run: whatever is left, plus what is already done.
            remaining = task.estimate_total(session, record.cursor_value)
            if remaining is not None:
                record.total = record.processed + remaining
        chunk = Chunk(
            version=task.version,
            epoch=epoch,
            cursor=record.cursor_value,
            processed=record.processed,
            total=record.total,
            batch_size=record.batch_size or task.options.batch_size,
            started=time.monotonic(),
        )
    log_event("running", version=task.version, epoch=epoch, cursor=encode_cursor(chunk.cursor))
    return chunk


def _run_batches(runtime: Runtime, task: DataTask, chunk: Chunk, lock: TaskLock) -> dict[str, Any]:
    budget = task.options.chunk_seconds or runtime.settings.chunk_seconds
    last_progress = 0.0
    # One Redis round trip renews the lease and polls the shutdown flag; short batches share
    # it, so that it costs nothing next to them (the epoch fences a runner that lost it).
    renew_every = min(RENEW_INTERVAL_SECONDS, lock.milliseconds / 10_000)
    last_renewal = 0.0
    with runtime.held_session() as session:
        while True:
            if chunk.batches and (
                time.monotonic() - chunk.started >= budget or runtime.should_stop()
            ):
                return _continue_later(runtime, chunk, "budget spent")
            backoff = 0.0
            if task.throttles:
                backoff = task.backoff_seconds(session)
                session.rollback()  # the throttle's read must not hold a snapshot open
            if backoff > 0:
                log_event("throttled", version=chunk.version, seconds=backoff)
                time.sleep(min(backoff, max(0.0, budget - (time.monotonic() - chunk.started))))
                if time.monotonic() - chunk.started >= budget:
                    return _continue_later(runtime, chunk, "throttled")
            try:
                finished = _run_one_batch(session, task, chunk)
            except Fenced:
                session.rollback()
                log_event("fenced", version=chunk.version, epoch=chunk.epoch)
                return chunk.summary("fenced")
            except Exception as error:
                session.rollback()
                return _record_failure(runtime, task, chunk, error)
            if finished:
                return _finish(runtime, task, chunk)
            now = time.monotonic()
            if now - last_renewal < renew_every:
                continue
            last_renewal = now
            try:
                owned, shutting_down = lock.renew_and_poll()
            except RedisError as error:
                log_event("redis_lost", version=chunk.version, error=str(error).splitlines()[0])
                return _continue_later(runtime, chunk, "Redis unreachable")
            if not owned and not lock.acquire():
                return chunk.summary("lost_lock")
            if shutting_down:
                return _continue_later(runtime, chunk, "worker shutting down")
            if runtime.on_progress is not None and now - last_progress >= PROGRESS_INTERVAL_SECONDS:
                last_progress = now
                runtime.on_progress(chunk.summary("running"))


def _run_one_batch(session: Session, task: DataTask, chunk: Chunk) -> bool:
    """Plan, fence, apply and commit one batch; True when there was nothing left to do."""
    began = time.monotonic()
    with session.begin():
        batch = task.plan(session, chunk.cursor, chunk.batch_size)
        if batch is None:
            return True
        if batch.cursor_from_apply:
            _compare_and_set(session, chunk, chunk.cursor, 0)
            returned = task.apply(session, batch)
            next_cursor = FINISHED if returned is None else returned
            _advance(session, chunk, next_cursor, batch)
        else:
            _compare_and_set(session, chunk, batch.next_cursor, batch.size)
            task.apply(session, batch)
            next_cursor = batch.next_cursor
    chunk.cursor = next_cursor
    chunk.processed += batch.size
    chunk.rows += batch.size
    chunk.batches += 1
    _adapt_batch_size(task, chunk, batch, time.monotonic() - began)
    return False


def _compare_and_set(session: Session, chunk: Chunk, new_cursor: Any, size: int) -> None:
    """The batch's first write: move the cursor only if this runner still owns the task."""
    old = encode_cursor(chunk.cursor)
    # Built once and run on the session's connection: this runs once per batch, and building
    # the statement and going through the ORM cost as much as the round trip itself.
    statement = _CAS_FROM_START if old is None else _CAS
    parameters = {
        "cas_version": chunk.version,
        "cas_epoch": chunk.epoch,
        "cas_old": old,
        "cas_new": encode_cursor(new_cursor),
        "cas_size": size,
        "cas_beat": utcnow(),
        "cas_batch_size": chunk.batch_size,
    }
    if session.connection().execute(statement, parameters).rowcount != 1:
        raise Fenced()


def _cas_statement(from_start: bool) -> Update:
    """UPDATE task_records ... WHERE version, epoch, status and cursor are what we hold."""
    records = cast(Table, TaskRecord.__table__)
    cursor = records.c.cursor
    return (
        update(records)
        .where(records.c.version == bindparam("cas_version"))
        .where(records.c.epoch == bindparam("cas_epoch"))
        .where(records.c.status == Status.RUNNING.value)
        .where(cursor.is_(None) if from_start else cursor == bindparam("cas_old"))
        .values(
            cursor=bindparam("cas_new"),
            processed=records.c.processed + bindparam("cas_size"),
            heartbeat_at=bindparam("cas_beat", type_=records.c.heartbeat_at.type),
            attempts=0,
            batch_size=bindparam("cas_batch_size"),
        )
    )


_CAS_FROM_START = _cas_statement(from_start=True)
_CAS = _cas_statement(from_start=False)
_ANY_PENDING = select(TaskRecord.version).where(TaskRecord.status == Status.PENDING.value).limit(1)


def _advance(session: Session, chunk: Chunk, new_cursor: Any, batch: Batch) -> None:
    """Record a custom batch's cursor, returned by the function, in the same transaction."""
    session.execute(
        update(TaskRecord)
        .where(TaskRecord.version == chunk.version)
        .values(cursor=encode_cursor(new_cursor), processed=TaskRecord.processed + batch.size)
        .execution_options(synchronize_session=False)
    )


def _adapt_batch_size(task: DataTask, chunk: Chunk, batch: Batch, seconds: float) -> None:
    """Grow or shrink the batch toward the target duration, within bounds."""
    target = task.options.target_batch_seconds
    if target is None or seconds <= 0 or batch.size < chunk.batch_size:
        return
    factor = min(GROW_LIMIT, max(SHRINK_LIMIT, target / seconds))
    size = round(chunk.batch_size * factor)
    chunk.batch_size = max(task.options.min_batch_size, min(task.options.max_batch_size, size))


def _continue_later(runtime: Runtime, chunk: Chunk, reason: str) -> dict[str, Any]:
    """Hand the task to a successor chunk job at the current cursor."""
    _requeue(runtime, chunk, countdown=0.0)
    log_event(
        "chunk_done",
        version=chunk.version,
        epoch=chunk.epoch,
        batches=chunk.batches,
        rows=chunk.rows,
        seconds=time.monotonic() - chunk.started,
        next="successor",
        reason=reason,
    )
    return chunk.summary("continued", reason=reason)


def _requeue(
    runtime: Runtime,
    chunk: Chunk,
    countdown: float,
    values: dict[str, Any] | None = None,
) -> bool:
    """Move running -> enqueued at this epoch and publish the successor.

    The queued marker goes first, so a concurrent sweep never takes the gap for a lost job;
    if the publish fails, the marker is dropped and the next sweep publishes again.
    """
    try:
        runtime.coordinator.mark_queued({chunk.version: chunk.epoch})
    except RedisError:
        pass  # No marker: the next deploy hook or sweep sees the job as lost and publishes it.
    with runtime.session() as session, session.begin():
        moved = move(
            session,
            chunk.version,
            Status.RUNNING,
            Status.ENQUEUED,
            chunk.epoch,
            {"enqueued_at": utcnow(), **(values or {})},
        )
    if not moved:
        return False
    try:
        runtime.publisher.publish(ChunkMessage(chunk.version, chunk.epoch), countdown=countdown)
    except Exception as error:
        log_event("publish_failed", version=chunk.version, error=str(error).splitlines()[0])
        try:
            runtime.coordinator.client.delete(
                f"{runtime.coordinator.prefix}:queued:{chunk.version}"
            )
        except RedisError:
            pass
    return True


def _record_failure(
    runtime: Runtime, task: DataTask, chunk: Chunk, error: BaseException
) -> dict[str, Any]:
    """Count a failed attempt; retry with backoff, or mark the task failed when out of attempts."""
    summary = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error) else ''}"
    trace = "".join(traceback.format_exception(error))
    limit = task.options.max_attempts or runtime.settings.max_attempts
    with runtime.session() as session:
        record = session.get(TaskRecord, chunk.version)
        attempts = (record.attempts if record else 0) + 1
    values: dict[str, Any] = {"attempts": attempts, "last_error": summary, "traceback": trace}
    if task.options.target_batch_seconds is not None and is_statement_timeout(error):
        # GitLab's rule for adaptive batches: one that timed out is halved before its retry.
        values["batch_size"] = max(task.options.min_batch_size, chunk.batch_size // 2)
    log_event(
        "batch_failed",
        version=chunk.version,
        epoch=chunk.epoch,
        attempt=attempts,
        error=summary,
        next_batch_size=values.get("batch_size"),
    )
    if attempts >= limit:
        with runtime.session() as session, session.begin():
            move(
                session,
                chunk.version,
                Status.RUNNING,
                Status.FAILED,
                chunk.epoch,
                {**values, "finished_at": utcnow()},
            )
        log_event("failed", version=chunk.version, epoch=chunk.epoch, attempts=attempts)
        return chunk.summary("failed", error=summary, attempts=attempts)
    settings = runtime.settings
    delay = min(settings.retry_max_seconds, settings.retry_base_seconds * 2 ** (attempts - 1))
    _requeue(runtime, chunk, countdown=delay, values=values)
    return chunk.summary("retrying", error=summary, attempts=attempts, countdown=delay)


def is_statement_timeout(error: BaseException) -> bool:
    """True when the database cancelled a statement that ran too long."""
    original = getattr(error, "orig", None)
    # PostgreSQL's query_canceled (psycopg 3 and psycopg2), MySQL's ER_QUERY_TIMEOUT.
    code = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    mysql_code = original.args[0] if original is not None and original.args else None
    return code == "57014" or mysql_code == 3024


def _finish(runtime: Runtime, task: DataTask, chunk: Chunk) -> dict[str, Any]:
    """Run the checks, then mark the task succeeded and enqueue the tasks it unblocked."""
    try:
        with runtime.session() as session, session.begin():
            message = task.failed_check(session) if task.checks else None
    except Exception as error:
        return _record_failure(runtime, task, chunk, error)
    now = utcnow()
    with runtime.session() as session, session.begin():
        if message:
            values = {"last_error": f"check failed: {message}", "finished_at": now}
            moved = move(session, chunk.version, Status.RUNNING, Status.FAILED, chunk.epoch, values)
            outcome = "check_failed"
        else:
            # A success after retries leaves no error behind to mislead `show`.
            values = {"finished_at": now, "heartbeat_at": now}
            values.update(last_error=None, traceback=None)
            moved = move(
                session, chunk.version, Status.RUNNING, Status.SUCCEEDED, chunk.epoch, values
            )
            outcome = "succeeded"
    if not moved:
        return chunk.summary("fenced")
    log_event(
        outcome,
        version=chunk.version,
        epoch=chunk.epoch,
        processed=chunk.processed,
        seconds=time.monotonic() - chunk.started,
    )
    if outcome == "succeeded":
        _enqueue_unblocked(runtime)
    return chunk.summary(outcome, **({"error": message} if message else {}))


def _enqueue_unblocked(runtime: Runtime) -> None:
    """Start the tasks that were waiting on this one, without waiting for another deploy."""
    from data_tasks.scheduler import enqueue  # the scheduler also imports the runtime

    try:
        # Only a pending task can have waited on this one. The full pass imports every open
        # task file, so skipping it when none is pending keeps many small tasks cheap.
        with runtime.session() as session:
            pending = session.execute(_ANY_PENDING).first()
        if pending is None:
            return
        report = enqueue(runtime)
    except Exception as error:
        # The next deploy hook or sweep starts them; the success is already recorded.
        log_event("enqueue_unblocked_failed", error=str(error).splitlines()[0])
        return
    for item in report.enqueued:
        log_event("unblocked", version=item.version, epoch=item.epoch)


def _pass_on_unknown(runtime: Runtime, message: ChunkMessage) -> dict[str, Any]:
    """A worker of an older release lacks the file: publish the job again, later."""
    settings = runtime.settings
    if message.unknown_retries >= settings.unknown_version_retries:
        error = (
            f"no worker had the file of version {message.version} after "
            f"{message.unknown_retries} tries"
        )
        _fail_unstarted(runtime, message, error, "unknown_version")
        return {"outcome": "unknown_version", "version": message.version, "error": error}
    retried = replace(message, unknown_retries=message.unknown_retries + 1)
    runtime.publisher.publish(retried, countdown=settings.unknown_version_countdown)
    log_event("unknown_version", version=message.version, retry=retried.unknown_retries)
    return {"outcome": "passed_on", "version": message.version, "epoch": message.epoch}


def _fail_unstarted(runtime: Runtime, message: ChunkMessage, error: str, event: str) -> None:
    """Fail a task this worker cannot start (its file is broken or nowhere to be found).

    A fixed file changes its hash, so the next deploy hook resumes it; `retry` always does.
    """
    with runtime.session() as session, session.begin():
        move(
            session,
            message.version,
            Status.ENQUEUED,
            Status.FAILED,
            message.epoch,
            {"last_error": error, "finished_at": utcnow()},
        )
    log_event(event, version=message.version, error=error)
