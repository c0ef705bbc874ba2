"""The chunk job's logic: run one lane of a data task for a bounded time, batch by batch.

Each batch commits its writes together with its lane's cursor advance, in a transaction
opened by a compare-and-set on (version, lane, epoch, cursor) that also requires the run to
be current. Zero rows updated means another chunk owns the lane, or the run was paused,
cancelled or claimed again: roll back and stop. Every task runs this way, one lane or many.
The Celery job in worker/ is a shell around `run_chunk`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

from redis.exceptions import RedisError
from sqlalchemy import Connection, select, update
from sqlalchemy.orm import Session

from data_tasks.authors_turn import take_turn
from data_tasks.chunk import Chunk, Fenced
from data_tasks.coordination import Lease
from data_tasks.data_task import FINISHED, Batch, DataTask
from data_tasks.database import batch_opening
from data_tasks.errors import InvalidTaskFile, UnknownVersion
from data_tasks.folded_plan import FoldedPlan
from data_tasks.lanes import ADVANCE, ADVANCE_FROM_START, START, TaskLane, add_lanes
from data_tasks.log import first_line, log_event
from data_tasks.outcomes import (
    continue_later,
    fail_unstarted,
    finish_lane,
    pass_on,
    publish_lanes,
    record_failure,
)
from data_tasks.pipeline import BatchPipeline, pipelines
from data_tasks.publisher import ChunkMessage
from data_tasks.records import TaskRecord, decode_cursor, encode_cursor, move, utcnow
from data_tasks.runtime import Runtime
from data_tasks.status import Status

# Adaptive batch sizes change by at most these factors per batch (GitLab's optimizer: 1.2x up).
GROW_LIMIT = 1.2
SHRINK_LIMIT = 0.5
PROGRESS_INTERVAL_SECONDS = 1.0
# Why a chunk stops between batches, besides its budget and a shutdown.
LEASE_LOST = "lease taken over"
REDIS_LOST = "Redis unreachable"


def run_chunk(runtime: Runtime, message: ChunkMessage) -> dict[str, Any]:
    """Run one chunk of one lane of a data task; returns a summary whose `outcome` says how."""
    try:
        task = runtime.catalog.task(message.version)
    except UnknownVersion:
        return pass_on(
            runtime, message, "unknown_version", f"the file of version {message.version}"
        )
    except InvalidTaskFile as error:
        fail_unstarted(runtime, message, str(error), "invalid_task_file")
        return {"outcome": "invalid_task_file", "version": message.version, "error": str(error)}
    try:
        runtime.coordinator.unmark_queued(message.version, message.lane, message.epoch)
    except RedisError:
        pass  # The marker expires; until then the sweep takes the job for queued.
    runtime.step("taken")
    try:
        started = _start(runtime, task, message)
    except Exception as error:
        # The database or Redis failed before the lane started: the job is still the live
        # one, so it goes back to the queue instead of being dropped with Celery's failure.
        log_event(
            "start_failed", version=message.version, lane=message.lane, error=first_line(error)
        )
        try:
            runtime.publish([message], countdown=runtime.settings.retry_base_seconds)
        except Exception:
            pass  # No marker was written: the next deploy hook or sweep publishes it again.
        return {"outcome": "start_failed", "version": message.version, "error": first_line(error)}
    if not isinstance(started, Chunk):
        return started
    chunk = started
    runtime.step("started")
    lease = runtime.coordinator.lease(chunk.version, chunk.lane, runtime.hostname)
    try:
        lease.take()
    except RedisError as error:
        log_event("redis_lost", **chunk.ids, error=first_line(error))
        return continue_later(runtime, chunk, REDIS_LOST)
    try:
        summary = _run(runtime, task, chunk, lease)
    finally:
        lease.release()
    log_event(
        "chunk",
        **chunk.ids,
        outcome=summary["outcome"],
        batches=chunk.batches,
        rows=chunk.rows,
        duration=summary["seconds"],
        processed=chunk.processed,
        total=chunk.total,
        reason=summary.get("reason"),
        error=summary.get("error"),
    )
    return summary


def _start(runtime: Runtime, task: DataTask, message: ChunkMessage) -> Chunk | dict[str, Any]:
    """Start the lane at the next epoch, or say why this message may not (stale, other file)."""
    ids: dict[str, Any] = {"version": message.version, "lane": message.lane, "epoch": message.epoch}
    now = utcnow()
    with runtime.session() as session, session.begin():
        record = session.get(TaskRecord, message.version)
        if record is None or record.state not in (Status.ENQUEUED, Status.RUNNING):
            seen = f"{record.status} at epoch {record.epoch}" if record else "no record"
            log_event("stale_message", **ids, record=seen)
            return {"outcome": "stale", **ids}
        if record.source_hash and record.source_hash != runtime.catalog.source_hash(task.version):
            session.rollback()
            lacking = f"the deployed file of version {message.version}"
            return pass_on(runtime, message, "file_differs", lacking)
        parameters = {
            "l_version": message.version,
            "l_lane": message.lane,
            "l_epoch": message.epoch,
            "l_beat": now,
            "l_worker": runtime.hostname,
        }
        if session.connection().execute(START, parameters).rowcount != 1:
            lane_now = session.get(TaskLane, (message.version, message.lane))
            seen = f"{lane_now.status} at epoch {lane_now.epoch}" if lane_now else "no lane"
            log_event("stale_message", **ids, lane_state=seen)
            return {"outcome": "stale", **ids}
        if record.state == Status.ENQUEUED:
            values = {"started_at": record.started_at or now, "worker": runtime.hostname}
            if not move(
                session, task.version, Status.ENQUEUED, Status.RUNNING, record.epoch, values
            ):
                session.rollback()
                log_event("stale_message", **ids, record="moved meanwhile")
                return {"outcome": "stale", **ids}
        lane = session.execute(
            select(TaskLane)
            .where(TaskLane.version == message.version, TaskLane.lane == message.lane)
            .execution_options(populate_existing=True)
        ).scalar_one()
        chunk = Chunk(
            version=task.version,
            lane=lane.lane,
            epoch=lane.epoch,
            run_epoch=record.epoch,
            cursor=decode_cursor(lane.cursor),
            upper=decode_cursor(lane.upper),
            processed=lane.processed,
            total=lane.total,
            batch_size=lane.batch_size or task.options.batch_size,
            planned=lane.planned,
            started=time.monotonic(),
        )
    log_event("running", **chunk.ids, cursor=encode_cursor(chunk.cursor))
    return chunk


def _run(runtime: Runtime, task: DataTask, chunk: Chunk, lease: Lease) -> dict[str, Any]:
    """Plan the run if this lane starts it, then run batches until done, out of time or fenced."""
    try:
        if not chunk.planned and _plan_run(runtime, task, chunk):
            return finish_lane(runtime, task, chunk)
        return _run_batches(runtime, task, chunk, lease)
    except Fenced:
        log_event("fenced", **chunk.ids)
        return chunk.summary("fenced")
    except Exception as error:
        return record_failure(runtime, task, chunk, error)


def _plan_run(runtime: Runtime, task: DataTask, chunk: Chunk) -> bool:
    """Cut a new run's key ranges and start its other lanes; True when there is nothing to do.

    The ranges are read in a transaction of their own, so that reading them (an estimate and a
    sample on PostgreSQL, a count elsewhere) holds no lock a deploy hook or an operator would
    wait on.
    """
    with runtime.session() as session, session.begin():
        ranges = task.ranges(session, task.options.parallel)
    with runtime.session() as session, session.begin():
        others = add_lanes(session, chunk.version, chunk.epoch, ranges)
        if others is None:
            raise Fenced()
    chunk.planned = True
    chunk.upper, chunk.total = ranges[0].upper, ranges[0].total
    runtime.step("planned")
    if others:
        publish_lanes(runtime, chunk.version, others)
        log_event("lanes", version=chunk.version, lanes=len(ranges), run_epoch=chunk.run_epoch)
    return ranges[0].empty


def _run_batches(runtime: Runtime, task: DataTask, chunk: Chunk, lease: Lease) -> dict[str, Any]:
    budget = task.options.chunk_seconds or runtime.settings.chunk_seconds
    last_progress = 0.0

    def out_of_time() -> bool:
        return time.monotonic() - chunk.started >= budget

    def stop_reason(batches: int) -> str | None:
        # Why not to start another batch after `batches`: a chunk always does at least one.
        if lease.lost:
            return LEASE_LOST
        if lease.error is not None:
            return REDIS_LOST
        if batches and (out_of_time() or runtime.should_stop() or lease.shutting_down):
            return "budget spent" if out_of_time() else "worker shutting down"
        return None

    def report() -> None:
        nonlocal last_progress
        now = time.monotonic()
        if runtime.on_progress is not None and now - last_progress >= PROGRESS_INTERVAL_SECONDS:
            last_progress = now
            runtime.on_progress(chunk.summary("running"))

    with runtime.held_session() as session:
        folded = FoldedPlan(task, runtime.engine.dialect.update_returning)
        opening = batch_opening(
            cast(Connection, session.bind).dialect.name, runtime.settings.batch_synchronous_commit
        )
        if runtime.batch_host is None and not task.throttles and pipelines(session):
            reason = _run_pipelined(
                BatchPipeline(session, folded, opening, chunk), task, chunk, stop_reason, report
            )
            return (
                _stop(runtime, chunk, lease, reason)
                if reason
                else finish_lane(runtime, task, chunk)
            )
        while True:
            reason = stop_reason(chunk.batches)
            if reason is not None:
                return _stop(runtime, chunk, lease, reason)
            if task.throttles:
                backoff = task.backoff_seconds(session)
                session.rollback()  # the throttle's read must not hold a snapshot open
                if backoff > 0:
                    # Asked again before the batch; a shutdown or the budget ends the wait.
                    log_event("throttled", **chunk.ids, seconds=backoff)
                    left = max(0.0, budget - (time.monotonic() - chunk.started))
                    if lease.wait(min(backoff, left)) or out_of_time():
                        return continue_later(runtime, chunk, "throttled")
                    continue
            if _run_one_batch(runtime, session, task, chunk, folded, opening):
                return finish_lane(runtime, task, chunk)
            report()


def _run_pipelined(
    pipeline: BatchPipeline,
    task: DataTask,
    chunk: Chunk,
    stop_reason: Callable[[int], str | None],
    report: Callable[[], None],
) -> str | None:
    """Run batches, each COMMIT sent with the next BEGIN (and plan); why it stopped, None when
    done."""
    reason = stop_reason(chunk.batches)
    if reason is not None:
        return reason
    session = pipeline.session
    with pipeline.opened():
        planned = pipeline.first(chunk)
        while True:
            began = time.monotonic()
            batch = (
                planned
                if pipeline.plans
                else task.plan(session, chunk.cursor, chunk.batch_size, chunk.upper)
            )
            if batch is None:
                pipeline.end()
                return None
            next_cursor = _apply(session, task, chunk, batch, fenced=pipeline.plans)
            session.flush()
            adapt_batch_size(task, chunk, batch, time.monotonic() - began)
            # Asked before this batch's COMMIT, which opens the next batch only if there is
            # to be a next batch.
            reason = stop_reason(chunk.batches + 1)
            planned = pipeline.commit(chunk, batch, next_cursor, open_next=reason is None)
            report()
            if reason is not None:
                return reason


def _stop(runtime: Runtime, chunk: Chunk, lease: Lease, reason: str) -> dict[str, Any]:
    """End the chunk between batches for `reason`: fenced, or handed to a successor job."""
    if reason == LEASE_LOST:
        # Only a chunk the database let start takes a lease over: this one is fenced.
        log_event("fenced", **chunk.ids, reason=reason)
        return chunk.summary("fenced", reason=reason)
    if reason == REDIS_LOST:
        log_event("redis_lost", **chunk.ids, error=lease.error)
    return continue_later(runtime, chunk, reason)


def _run_one_batch(
    runtime: Runtime,
    session: Session,
    task: DataTask,
    chunk: Chunk,
    folded: FoldedPlan,
    opening: str | None,
) -> bool:
    """Plan, fence, apply and commit one batch; True when the lane has nothing left to do."""
    began = time.monotonic()
    try:
        with runtime.batch_transaction(), session.begin():
            if opening:
                session.connection().exec_driver_sql(opening)
            statement = folded.statement(chunk.cursor, chunk.upper)
            batch = (
                folded.plan_and_advance(session, chunk, statement)
                if statement is not None
                else task.plan(session, chunk.cursor, chunk.batch_size, chunk.upper)
            )
            if batch is None:
                return True
            next_cursor = _apply(session, task, chunk, batch, fenced=statement is not None)
    except BaseException:
        session.rollback()
        raise
    chunk.count(batch.size, next_cursor)
    adapt_batch_size(task, chunk, batch, time.monotonic() - began)
    return False


def _apply(session: Session, task: DataTask, chunk: Chunk, batch: Batch, fenced: bool) -> Any:
    """Apply a planned batch; returns the cursor after it. A folded plan (`fenced`) has moved
    the cursor over the batch already."""
    if fenced:
        take_turn(session, task, batch)
        return batch.next_cursor
    return _fence_and_apply(session, task, chunk, batch)


def _fence_and_apply(session: Session, task: DataTask, chunk: Chunk, batch: Batch) -> Any:
    """Move the cursor over a planned batch if this chunk still owns the lane, then apply it;
    returns the next cursor (a custom batch's function returns it, recorded after)."""
    if not batch.cursor_from_apply:
        _compare_and_set(session, chunk, batch.next_cursor, batch.size)
        take_turn(session, task, batch)
        return batch.next_cursor
    _compare_and_set(session, chunk, chunk.cursor, 0)
    returned = take_turn(session, task, batch)
    next_cursor = FINISHED if returned is None else returned
    _advance(session, chunk, next_cursor, batch)
    return next_cursor


def _compare_and_set(session: Session, chunk: Chunk, new_cursor: Any, size: int) -> None:
    """The batch's first write: move the cursor only if this chunk still owns the lane."""
    old = encode_cursor(chunk.cursor)
    statement = ADVANCE_FROM_START if old is None else ADVANCE
    parameters = {
        **chunk.parameters(),
        "l_old": old,
        "l_new": encode_cursor(new_cursor),
        "l_size": size,
        "l_beat": utcnow(),
        "l_batch_size": chunk.batch_size,
    }
    # Run on the session's connection: this runs once per batch, and the ORM's bookkeeping
    # cost as much as the round trip itself.
    if session.connection().execute(statement, parameters).rowcount != 1:
        raise Fenced()


def _advance(session: Session, chunk: Chunk, new_cursor: Any, batch: Batch) -> None:
    """Record a custom batch's cursor, returned by the function, in the same transaction."""
    session.execute(
        update(TaskLane)
        .where(TaskLane.version == chunk.version, TaskLane.lane == chunk.lane)
        .values(cursor=encode_cursor(new_cursor), processed=TaskLane.processed + batch.size)
        .execution_options(synchronize_session=False)
    )


def adapt_batch_size(task: DataTask, chunk: Chunk, batch: Batch, seconds: float) -> None:
    """Grow or shrink the batch toward the target duration, within bounds."""
    target = task.options.target_batch_seconds
    if target is None or seconds <= 0 or batch.size < chunk.batch_size:
        return
    factor = min(GROW_LIMIT, max(SHRINK_LIMIT, target / seconds))
    size = round(chunk.batch_size * factor)
    chunk.batch_size = max(task.options.min_batch_size, min(task.options.max_batch_size, size))
