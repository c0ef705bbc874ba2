"""The chunk job's logic: resumable batches, the compare-and-set fence, retries, odd messages."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text, update

from data_tasks.lanes import LaneStatus, TaskLane
from data_tasks.runner import run_chunk
from data_tasks.runtime import Runtime
from data_tasks.scheduler import enqueue
from data_tasks.status import Status
from tests.conftest import copy_tasks
from tests.items import applied_counts, create_items
from tests.running import drain, lane, meanwhile, published, record, recording, take

COUNT_ITEMS = "20250101000000_count_items.py"


def test_a_backfill_cut_into_many_chunks_applies_every_row_exactly_once(
    db_runtime: Runtime,
) -> None:
    rows = 200_000
    runtime = db_runtime
    # A zero budget still runs one batch per chunk: the chunk count is exact, whatever the speed.
    runtime.settings = runtime.settings.with_(chunk_seconds=0.0)
    copy_tasks(runtime.settings.tasks_dir, COUNT_ITEMS)
    create_items(runtime.engine, rows)

    started = time.monotonic()
    enqueue(runtime)
    summaries = drain(runtime)
    seconds = time.monotonic() - started

    assert applied_counts(runtime.engine) == {1: rows}
    outcomes = [summary["outcome"] for summary in summaries]
    assert outcomes[-1] == "succeeded"
    assert set(outcomes[:-1]) == {"continued"}
    # One chunk per 500-key batch, and a last one that finds nothing left and finishes.
    assert len(summaries) == rows // 500 + 1
    done = record(runtime, "20250101000000")
    assert (done.processed, done.total) == (rows, rows)
    assert lane(runtime, "20250101000000").cursor_value == rows
    print(
        f"\n{runtime.engine.dialect.name}: {rows} rows in {len(summaries)} chunks, "
        f"{seconds:.2f}s, {rows / seconds:,.0f} rows/s"
    )


def test_a_message_run_a_second_time_commits_nothing(db_runtime: Runtime) -> None:
    copy_tasks(db_runtime.settings.tasks_dir, COUNT_ITEMS)
    create_items(db_runtime.engine, 2_000)
    enqueue(db_runtime)
    [first] = published(db_runtime)

    summaries = drain(db_runtime)
    again = run_chunk(db_runtime, first)

    assert summaries[-1]["outcome"] == "succeeded"
    assert again["outcome"] == "stale"
    assert applied_counts(db_runtime.engine) == {1: 2_000}
    assert record(db_runtime, "20250101000000").state is Status.SUCCEEDED


def test_a_runner_whose_epoch_was_bumped_commits_no_further_batch(db_runtime: Runtime) -> None:
    copy_tasks(db_runtime.settings.tasks_dir, "20250107000000_fenced_by_epoch.py")
    create_items(db_runtime.engine, 2_000)
    enqueue(db_runtime)
    [message] = take(db_runtime)

    summary = run_chunk(db_runtime, message)

    assert summary["outcome"] == "fenced"
    # The first batch (ids 1..500) committed; the batch after the other claim did not.
    assert applied_counts(db_runtime.engine) == {1: 500, 0: 1_500}
    fenced = lane(db_runtime, "20250107000000")
    assert (fenced.cursor_value, fenced.processed) == (500, 500)
    assert fenced.epoch == message.epoch + 2  # this runner's start, then the other one
    assert published(db_runtime) == []


def test_a_runner_fenced_at_its_hand_off_says_fenced_and_leaves_the_marker_alone(
    db_runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    copy_tasks(db_runtime.settings.tasks_dir, COUNT_ITEMS)
    create_items(db_runtime.engine, 2_000)
    enqueue(db_runtime)
    [message] = take(db_runtime)
    version = message.version

    def start_the_lane_again() -> None:
        with db_runtime.engine.begin() as connection:
            if db_runtime.engine.dialect.name == "postgresql":
                # Queued before the runner's hand-off, which then waits for this start.
                connection.execute(text("LOCK TABLE task_lanes IN SHARE ROW EXCLUSIVE MODE"))
            connection.execute(text("UPDATE task_lanes SET epoch = epoch + 1"))

    successors: list[threading.Thread] = []

    def a_successor_starts_the_lane() -> bool:
        # After the runner's first batch another chunk starts the lane at a newer epoch, and
        # the job it came from was marked queued.
        successors.append(meanwhile(db_runtime, start_the_lane_again, "LOCK TABLE task_lanes"))
        db_runtime.coordinator.mark_queued({(version, 0): 7})
        return True  # as if the worker were shutting down: hand the lane over

    caplog.set_level(logging.INFO, logger="data_tasks")
    summary = run_chunk(replace(db_runtime, should_stop=a_successor_starts_the_lane), message)
    successors[0].join(timeout=30)

    assert summary["outcome"] == "fenced"
    assert applied_counts(db_runtime.engine) == {1: 500, 0: 1_500}
    assert published(db_runtime) == []
    assert db_runtime.coordinator.queued_epochs([(version, 0)]) == {(version, 0): 7}
    logged = [record.getMessage() for record in caplog.records]
    assert any("event=fenced" in line for line in logged)
    assert not any("event=chunk_done" in line or "next=successor" in line for line in logged)


def test_a_runner_whose_cursor_moved_commits_no_further_batch(db_runtime: Runtime) -> None:
    copy_tasks(db_runtime.settings.tasks_dir, "20250108000000_fenced_by_cursor.py")
    create_items(db_runtime.engine, 2_000)
    enqueue(db_runtime)
    [message] = take(db_runtime)

    summary = run_chunk(db_runtime, message)

    assert summary["outcome"] == "fenced"
    assert applied_counts(db_runtime.engine) == {1: 500, 0: 1_500}
    assert lane(db_runtime, "20250108000000").cursor_value == 1_000


def test_the_same_message_delivered_twice_at_once_runs_once(db_runtime: Runtime) -> None:
    copy_tasks(db_runtime.settings.tasks_dir, COUNT_ITEMS)
    create_items(db_runtime.engine, 20_000)
    enqueue(db_runtime)
    [message] = take(db_runtime)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def deliver() -> None:
        barrier.wait()
        outcomes.append(run_chunk(db_runtime, message)["outcome"])

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    drain(db_runtime)

    # The copy that loses the lease either drops itself or, while the winner has not yet
    # claimed the record, passes itself on to run later and be refused as stale then.
    ran = [outcome for outcome in outcomes if outcome not in ("duplicate", "stale", "lock_busy")]
    assert len(ran) == 1, outcomes
    assert applied_counts(db_runtime.engine) == {1: 20_000}
    assert record(db_runtime, "20250101000000").state is Status.SUCCEEDED


def test_a_failing_task_is_retried_with_backoff_then_fails_with_its_traceback(
    db_runtime: Runtime,
) -> None:
    copy_tasks(db_runtime.settings.tasks_dir, "20250106000000_always_fails.py")
    enqueue(db_runtime)
    countdowns: list[float] = []
    summaries: list[dict[str, Any]] = []
    messages = recording(db_runtime).messages
    while messages:
        message, countdown = messages.pop(0)
        countdowns.append(countdown)
        summaries.append(run_chunk(db_runtime, message))

    assert [s["outcome"] for s in summaries] == ["retrying", "retrying", "failed"]
    # First the hook's message, then two retries, each waiting twice as long as the last.
    base = db_runtime.settings.retry_base_seconds
    assert countdowns == [0.0, base, 2 * base]
    failed = record(db_runtime, "20250106000000")
    assert failed.state is Status.FAILED
    assert failed.attempts == 3
    assert failed.last_error == "RuntimeError: the data is not what this task expected"
    assert failed.traceback is not None
    assert "Traceback (most recent call last)" in failed.traceback
    assert "always_fails" in failed.traceback
    assert failed.finished_at is not None


def test_a_worker_without_the_file_passes_the_job_on_then_fails_it(
    db_runtime: Runtime, tmp_path: Path
) -> None:
    copy_tasks(db_runtime.settings.tasks_dir, COUNT_ITEMS)
    create_items(db_runtime.engine, 100)
    enqueue(db_runtime)
    [message] = take(db_runtime)
    # An older release: its task folder lacks the new file.
    older = Runtime(
        settings=db_runtime.settings.with_(tasks_dir=tmp_path / "old", unknown_version_retries=2),
        engine=db_runtime.engine,
        coordinator=db_runtime.coordinator,
        publisher=db_runtime.publisher,
        catalog=type(db_runtime.catalog)(copy_tasks(tmp_path / "old")),
    )

    outcomes: list[str] = []
    pending = [message]
    while pending:
        outcomes.append(run_chunk(older, pending.pop())["outcome"])
        pending = take(older)

    assert outcomes == ["passed_on", "passed_on", "unknown_version"]
    failed = record(db_runtime, "20250101000000")
    assert failed.state is Status.FAILED
    assert failed.last_error is not None and "after 2 tries" in failed.last_error
    assert applied_counts(db_runtime.engine) == {0: 100}


def test_a_chunk_told_to_stop_finishes_its_batch_and_hands_over(db_runtime: Runtime) -> None:
    copy_tasks(db_runtime.settings.tasks_dir, COUNT_ITEMS)
    create_items(db_runtime.engine, 5_000)
    enqueue(db_runtime)
    [message] = take(db_runtime)
    db_runtime.should_stop = lambda: True

    summary = run_chunk(db_runtime, message)

    assert (summary["outcome"], summary["batches"]) == ("continued", 1)
    assert applied_counts(db_runtime.engine) == {1: 500, 0: 4_500}
    # The lane waits for its successor; the task stays running meanwhile.
    assert lane(db_runtime, "20250101000000").state is LaneStatus.ENQUEUED
    assert record(db_runtime, "20250101000000").state is Status.RUNNING
    [successor] = published(db_runtime)
    assert successor.epoch == message.epoch + 1


def test_a_lane_whose_last_batch_the_database_lost_is_not_marked_done(db_runtime: Runtime) -> None:
    # A failover to a replica behind the primary loses the last commits: the batch's rows and
    # its cursor move alike. The lane must not then be recorded as done without them.
    copy_tasks(db_runtime.settings.tasks_dir, COUNT_ITEMS)
    create_items(db_runtime.engine, 1_200)
    enqueue(db_runtime)
    [message] = take(db_runtime)

    def the_database_loses_the_last_batch(step: str) -> None:
        if step == "finishing":
            with db_runtime.engine.begin() as connection:
                connection.execute(text("UPDATE items SET applied = 0 WHERE id > 1000"))
                connection.execute(update(TaskLane).values(cursor="1000", processed=1_000))

    summary = run_chunk(replace(db_runtime, on_step=the_database_loses_the_last_batch), message)

    assert summary["outcome"] == "fenced", summary.get("error")
    assert record(db_runtime, message.version).state is Status.RUNNING
    left = lane(db_runtime, message.version)
    assert (left.status, left.cursor_value) == (LaneStatus.RUNNING.value, 1_000)
    assert applied_counts(db_runtime.engine) == {1: 1_000, 0: 200}
