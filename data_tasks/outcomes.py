"""How a chunk ends: handed to a successor, retried, failed, finished, or passed on.

Every ending is a compare-and-set on the lane at the chunk's epoch, under a run that is still
current: a chunk that was fenced meanwhile changes nothing and says `fenced`.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import replace
from typing import Any, cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from data_tasks.chunk import Chunk, Fenced
from data_tasks.data_task import DataTask
from data_tasks.lanes import LEAVE, LaneStatus, TaskLane, totals
from data_tasks.log import first_line, log_event
from data_tasks.publisher import ChunkMessage
from data_tasks.records import TaskRecord, encode_cursor, move, utcnow
from data_tasks.runtime import Runtime
from data_tasks.scheduler import enqueue
from data_tasks.status import Status

_ANY_PENDING = select(TaskRecord.version).where(TaskRecord.status == Status.PENDING.value).limit(1)


def publish_lanes(
    runtime: Runtime, version: str, lanes: list[tuple[int, int]], countdown: float = 0.0
) -> None:
    """Publish a job per (lane, epoch); one that fails is left to the next sweep."""
    try:
        runtime.publish(
            (ChunkMessage(version, epoch, lane=lane) for lane, epoch in lanes), countdown
        )
    except Exception as error:
        # The lanes are enqueued with no marker: the next deploy hook or sweep publishes them.
        log_event("publish_failed", version=version, error=first_line(error))


def _leave(session: Session, chunk: Chunk, to: LaneStatus, **values: Any) -> None:
    """Move the chunk's lane out of running, or raise Fenced."""
    statement = LEAVE[to].values(**values) if values else LEAVE[to]
    parameters = {**chunk.parameters(), "l_old": encode_cursor(chunk.cursor)}
    if session.connection().execute(statement, parameters).rowcount != 1:
        raise Fenced()


def _leave_done(session: Session, chunk: Chunk) -> None:
    """Mark the lane succeeded at its cursor; its total, estimated at the run's start, is now
    what it did."""
    lanes = cast(Table, TaskLane.__table__)
    _leave(session, chunk, LaneStatus.SUCCEEDED, finished_at=utcnow(), total=lanes.c.processed)


def continue_later(runtime: Runtime, chunk: Chunk, reason: str) -> dict[str, Any]:
    """Hand the lane to a successor chunk job at its cursor (fenced: nothing is published)."""
    try:
        with runtime.session() as session, session.begin():
            # The size the last batch adapted to: each batch records the size it ran with.
            _leave(session, chunk, LaneStatus.ENQUEUED, batch_size=chunk.batch_size)
    except Fenced:
        log_event("fenced", **chunk.ids)
        return chunk.summary("fenced", reason=reason)
    publish_lanes(runtime, chunk.version, [(chunk.lane, chunk.epoch)])
    log_event(
        "chunk_done",
        **chunk.ids,
        batches=chunk.batches,
        rows=chunk.rows,
        seconds=time.monotonic() - chunk.started,
        next="successor",
        reason=reason,
    )
    return chunk.summary("continued", reason=reason)


# Pauses between tries at recording a failure that the driver's operational or interface
# errors stop: most often the database restarting or recovering from a crash (which also
# caused the failure), back within these 15 s in most cases, or a lock held for a moment. A
# lane whose failure is never recorded waits for the sweep, running.
RECORD_RETRY_SECONDS = (0.5, 1.0, 2.0, 4.0, 8.0)


def record_failure(
    runtime: Runtime, task: DataTask, chunk: Chunk, error: BaseException
) -> dict[str, Any]:
    """Count a failed attempt of the lane; retry it with backoff, or fail the task when out.

    Tried again, RECORD_RETRY_SECONDS apart, while recording it fails with an
    OperationalError or InterfaceError (the database unreachable, restarting, or busy).
    """
    for pause in RECORD_RETRY_SECONDS:
        try:
            return _record_failure(runtime, task, chunk, error)
        except (OperationalError, InterfaceError) as unreachable:
            log_event("record_failed", **chunk.ids, error=first_line(unreachable), retry_in=pause)
            time.sleep(pause)
    return _record_failure(runtime, task, chunk, error)


def _record_failure(
    runtime: Runtime, task: DataTask, chunk: Chunk, error: BaseException
) -> dict[str, Any]:
    text = str(error).strip()
    summary = f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"
    trace = "".join(traceback.format_exception(error))
    limit = task.options.max_attempts or runtime.settings.max_attempts
    with runtime.session() as session:
        lane = session.get(TaskLane, (chunk.version, chunk.lane))
        attempts = (lane.attempts if lane else 0) + 1
    values: dict[str, Any] = {"attempts": attempts, "last_error": summary}
    if task.options.target_batch_seconds is not None and is_statement_timeout(error):
        # GitLab's rule for adaptive batches: one that timed out is halved before its retry.
        values["batch_size"] = max(task.options.min_batch_size, chunk.batch_size // 2)
    log_event(
        "batch_failed",
        **chunk.ids,
        attempt=attempts,
        error=summary,
        next_batch_size=values.get("batch_size"),
    )
    shown = summary if task.options.parallel == 1 else f"lane {chunk.lane}: {summary}"
    about = {"attempts": attempts, "last_error": shown, "traceback": trace}
    out_of_attempts = attempts >= limit
    try:
        with runtime.session() as session, session.begin():
            _leave(
                session,
                chunk,
                LaneStatus.FAILED if out_of_attempts else LaneStatus.ENQUEUED,
                **values,
            )
            if out_of_attempts:
                processed, total = totals(session, chunk.version)
                about.update(finished_at=utcnow(), processed=processed, total=total)
                move(session, chunk.version, Status.RUNNING, Status.FAILED, chunk.run_epoch, about)
            else:
                session.execute(
                    update(TaskRecord)
                    .where(TaskRecord.version == chunk.version)
                    .where(TaskRecord.epoch == chunk.run_epoch)
                    .values(**about)
                    .execution_options(synchronize_session=False)
                )
    except Fenced:
        log_event("fenced", **chunk.ids)
        return chunk.summary("fenced", error=summary)
    if out_of_attempts:
        log_event("failed", **chunk.ids, attempts=attempts)
        return chunk.summary("failed", error=summary, attempts=attempts)
    settings = runtime.settings
    delay = min(settings.retry_max_seconds, settings.retry_base_seconds * 2 ** (attempts - 1))
    publish_lanes(runtime, chunk.version, [(chunk.lane, chunk.epoch)], countdown=delay)
    return chunk.summary("retrying", error=summary, attempts=attempts, countdown=delay)


def is_statement_timeout(error: BaseException) -> bool:
    """True when the database cancelled a statement that ran too long."""
    original = getattr(error, "orig", None)
    # PostgreSQL's query_canceled (psycopg 3 and psycopg2), MySQL's ER_QUERY_TIMEOUT.
    code = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    mysql_code = original.args[0] if original is not None and original.args else None
    return code == "57014" or mysql_code == 3024


def _lock_live_run(session: Session, chunk: Chunk) -> None:
    """Lock the run's record, so that lanes finishing together see each other; Fenced if gone."""
    records = cast(Table, TaskRecord.__table__)
    live = session.execute(
        select(records.c.version)
        .where(records.c.version == chunk.version)
        .where(records.c.epoch == chunk.run_epoch)
        .where(records.c.status == Status.RUNNING.value)
        .with_for_update()
    ).first()
    if live is None:
        raise Fenced()


def finish_lane(runtime: Runtime, task: DataTask, chunk: Chunk) -> dict[str, Any]:
    """Mark the lane succeeded; the last lane runs the checks and marks the task succeeded.

    The checks run in the transaction that records the success, after the lane's fence: a
    stale chunk never reaches them, and a check's writes commit only with the success.
    """
    runtime.step("finishing")
    try:
        with runtime.session() as session, session.begin():
            _lock_live_run(session, chunk)
            _leave_done(session, chunk)
            left = session.execute(
                select(func.count())
                .select_from(TaskLane)
                .where(TaskLane.version == chunk.version)
                .where(TaskLane.status != LaneStatus.SUCCEEDED.value)
            ).scalar_one()
            if left:
                log_event("lane_succeeded", **chunk.ids, lanes_left=int(left))
                return chunk.summary("lane_succeeded", lanes_left=int(left))
            message = task.failed_check(session) if task.checks else None
            if message:
                session.rollback()
            else:
                _succeed(session, chunk)
        if message:
            return _fail_check(runtime, chunk, message)
    except Fenced:
        log_event("fenced", **chunk.ids)
        return chunk.summary("fenced")
    except Exception as error:
        return record_failure(runtime, task, chunk, error)
    log_event(
        "succeeded",
        version=chunk.version,
        epoch=chunk.run_epoch,
        processed=chunk.processed,
        seconds=time.monotonic() - chunk.started,
    )
    _enqueue_unblocked(runtime)
    return chunk.summary("succeeded")


def _succeed(session: Session, chunk: Chunk) -> None:
    processed, total = totals(session, chunk.version)
    now = utcnow()
    # A success after retries leaves no error behind to mislead `show`.
    values = {
        "finished_at": now,
        "heartbeat_at": now,
        "processed": processed,
        "total": total,
        "attempts": 0,
        "last_error": None,
        "traceback": None,
    }
    if not move(session, chunk.version, Status.RUNNING, Status.SUCCEEDED, chunk.run_epoch, values):
        raise Fenced()


def _fail_check(runtime: Runtime, chunk: Chunk, message: str) -> dict[str, Any]:
    """A check said the change is not done: the lane is finished, the task failed."""
    with runtime.session() as session, session.begin():
        _leave_done(session, chunk)
        processed, total = totals(session, chunk.version)
        values = {
            "last_error": f"check failed: {message}",
            "finished_at": utcnow(),
            "processed": processed,
            "total": total,
        }
        if not move(session, chunk.version, Status.RUNNING, Status.FAILED, chunk.run_epoch, values):
            raise Fenced()
    log_event("check_failed", version=chunk.version, epoch=chunk.run_epoch, error=message)
    return chunk.summary("check_failed", error=message)


def _enqueue_unblocked(runtime: Runtime) -> None:
    """Start the tasks that were waiting on this one, without waiting for another deploy."""
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
        log_event("enqueue_unblocked_failed", error=first_line(error))
        return
    for item in report.enqueued:
        log_event("unblocked", version=item.version, epoch=item.epoch)


def pass_on(runtime: Runtime, message: ChunkMessage, event: str, lacking: str) -> dict[str, Any]:
    """This worker cannot run the job (another release's file): publish it again, later.

    `lacking` says what no worker had, for the error once the tries run out.
    """
    settings = runtime.settings
    if message.unknown_retries >= settings.unknown_version_retries:
        error = f"no worker had {lacking} after {message.unknown_retries} tries"
        fail_unstarted(runtime, message, error, event)
        return {"outcome": event, "version": message.version, "error": error}
    retried = replace(message, unknown_retries=message.unknown_retries + 1)
    try:
        runtime.publish([retried], countdown=settings.unknown_version_countdown)
    except Exception as error:
        log_event("publish_failed", version=message.version, error=first_line(error))
    log_event(event, version=message.version, lane=message.lane, retry=retried.unknown_retries)
    return {"outcome": "passed_on", "version": message.version, "epoch": message.epoch}


def fail_unstarted(runtime: Runtime, message: ChunkMessage, error: str, event: str) -> None:
    """Fail a task this worker cannot start (its file is broken or nowhere to be found).

    A fixed file changes its hash, so the next deploy hook resumes it; `retry` always does.
    """
    with runtime.session() as session, session.begin():
        move(
            session,
            message.version,
            [Status.ENQUEUED, Status.RUNNING],
            Status.FAILED,
            None,
            {"last_error": error, "finished_at": utcnow()},
        )
    log_event(event, version=message.version, error=error)
