"""The operators' Python API on the real PostgreSQL and Redis: every command, every refusal."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, text

from data_tasks import operations
from data_tasks.errors import DataTaskError, InvalidTransition, UnknownVersion
from data_tasks.publisher import ChunkMessage
from data_tasks.runtime import Runtime
from data_tasks.scheduler import enqueue
from data_tasks.status import Status
from tests.conftest import copy_tasks
from tests.items import applied_counts, create_items
from tests.running import drain, lane, published, record, take

COUNT = "20250301000000"
COUNT_FILE = "20250301000000_ops_count_items.py"
POISONED = "20250301000100"
POISONED_FILE = "20250301000100_ops_poisoned_items.py"
FIRST_FILE = "20250302000000_ops_first.py"
SECOND = "20250302000100"
SECOND_FILE = "20250302000100_ops_second.py"


def poison(engine: Engine, item: int, label: str = "poison") -> None:
    """Label one item, so that the poisoned task's batch covering it raises (or not)."""
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE items SET label = :l WHERE id = :i"), {"l": label, "i": item}
        )


def failed_at_450(runtime: Runtime, engine: Engine) -> None:
    """The poisoned task run until it fails on item 450, after 4 committed batches."""
    copy_tasks(runtime.settings.tasks_dir, POISONED_FILE)
    create_items(engine, 1000)
    poison(engine, 450)
    run = operations.run_inline(runtime, POISONED)
    assert run.status == Status.FAILED


def test_retry_resumes_a_failed_task_at_its_cursor(
    runtime: Runtime, postgres_engine: Engine
) -> None:
    failed_at_450(runtime, postgres_engine)
    failed = record(runtime, POISONED)
    assert (lane(runtime, POISONED).cursor_value, failed.processed) == (400, 400)
    assert failed.last_error == "RuntimeError: item 450 is poisoned"
    assert failed.traceback is not None and "raise RuntimeError" in failed.traceback

    poison(postgres_engine, 450, label="cured")
    take(runtime)
    enqueued = operations.retry(runtime, POISONED)

    assert enqueued.epoch > failed.epoch
    assert published(runtime) == [ChunkMessage(POISONED, enqueued.epoch)]
    assert record(runtime, POISONED).state == Status.ENQUEUED
    drain(runtime)
    assert record(runtime, POISONED).state == Status.SUCCEEDED
    assert applied_counts(postgres_engine) == {1: 1000}


def test_retry_refuses_a_task_that_has_not_failed(
    runtime: Runtime, postgres_engine: Engine
) -> None:
    copy_tasks(runtime.settings.tasks_dir, COUNT_FILE)
    create_items(postgres_engine, 10)
    operations.run_inline(runtime, COUNT)

    with pytest.raises(InvalidTransition) as refused:
        operations.retry(runtime, COUNT)
    assert str(refused.value) == f"data task {COUNT}: cannot retry it while it is succeeded"
    assert published(runtime) == []


def test_pause_fences_the_queued_job_and_resume_publishes_a_new_one(
    runtime: Runtime, postgres_engine: Engine
) -> None:
    copy_tasks(runtime.settings.tasks_dir, COUNT_FILE)
    create_items(postgres_engine, 500)
    enqueue(runtime)
    queued = take(runtime)

    assert operations.pause(runtime, COUNT) == Status.ENQUEUED
    from data_tasks.runner import run_chunk

    assert run_chunk(runtime, queued[0])["outcome"] == "stale"
    assert applied_counts(postgres_engine) == {0: 500}

    resumed = operations.resume(runtime, COUNT)
    assert resumed.epoch == 2  # the run's epoch; its lane's job is fenced from the paused one
    assert published(runtime) == [ChunkMessage(COUNT, queued[0].epoch + 1)]
    drain(runtime)
    assert record(runtime, COUNT).state == Status.SUCCEEDED
    assert applied_counts(postgres_engine) == {1: 500}


def test_pausing_a_running_task_stops_it_after_its_batch_and_resume_goes_on(
    runtime: Runtime, postgres_engine: Engine
) -> None:
    copy_tasks(runtime.settings.tasks_dir, COUNT_FILE)
    create_items(postgres_engine, 1000)
    paused: list[Status] = []

    def pause_once(_summary: dict[str, Any]) -> None:
        if not paused:
            paused.append(operations.pause(runtime, COUNT))

    run = operations.run_inline(runtime, COUNT, on_progress=pause_once)

    assert paused == [Status.RUNNING]
    assert run.status == Status.PAUSED
    assert run.chunks[-1]["outcome"] == "fenced"
    stopped_at = lane(runtime, COUNT).processed
    assert 0 < stopped_at < 1000
    assert applied_counts(postgres_engine) == {1: stopped_at, 0: 1000 - stopped_at}

    operations.resume(runtime, COUNT)
    drain(runtime)
    assert applied_counts(postgres_engine) == {1: 1000}


def test_cancel_then_rerun_and_the_refusals_between(
    runtime: Runtime, postgres_engine: Engine
) -> None:
    copy_tasks(runtime.settings.tasks_dir, COUNT_FILE)
    create_items(postgres_engine, 300)

    assert operations.cancel(runtime, COUNT) == Status.PENDING
    assert record(runtime, COUNT).state == Status.CANCELLED
    assert enqueue(runtime).enqueued == []
    with pytest.raises(InvalidTransition, match="cannot cancel it while it is cancelled"):
        operations.cancel(runtime, COUNT)
    with pytest.raises(InvalidTransition, match="cannot resume it while it is cancelled"):
        operations.resume(runtime, COUNT)

    operations.rerun(runtime, COUNT)
    drain(runtime)
    assert applied_counts(postgres_engine) == {1: 300}


def test_rerun_starts_a_new_epoch_from_the_beginning(
    runtime: Runtime, postgres_engine: Engine
) -> None:
    copy_tasks(runtime.settings.tasks_dir, COUNT_FILE)
    create_items(postgres_engine, 300)
    operations.run_inline(runtime, COUNT)
    done = record(runtime, COUNT)

    enqueued = operations.rerun(runtime, COUNT)

    again = record(runtime, COUNT)
    assert again.epoch == enqueued.epoch > done.epoch
    assert (again.status, lane(runtime, COUNT).cursor, again.processed, again.finished_at) == (
        "enqueued",
        None,
        0,
        None,
    )
    drain(runtime)
    assert record(runtime, COUNT).state == Status.SUCCEEDED
    assert applied_counts(postgres_engine) == {2: 300}


def test_rerun_refuses_a_task_in_flight(runtime: Runtime, postgres_engine: Engine) -> None:
    copy_tasks(runtime.settings.tasks_dir, COUNT_FILE)
    create_items(postgres_engine, 10)
    enqueue(runtime)
    with pytest.raises(InvalidTransition, match="cannot rerun it while it is enqueued"):
        operations.rerun(runtime, COUNT)


def test_skip_all_pending_marks_a_fresh_environment_done_without_running(
    runtime: Runtime, postgres_engine: Engine
) -> None:
    copy_tasks(runtime.settings.tasks_dir, COUNT_FILE, POISONED_FILE)
    create_items(postgres_engine, 100)

    marked = operations.skip(runtime, all_pending=True)

    assert marked == [COUNT, POISONED]
    assert {record(runtime, v).status for v in marked} == {"skipped"}
    assert enqueue(runtime).enqueued == []
    assert applied_counts(postgres_engine) == {0: 100}
    assert operations.skip(runtime, all_pending=True) == []


def test_skip_a_failed_task_lets_its_dependents_run(
    runtime: Runtime, postgres_engine: Engine
) -> None:
    failed_at_450(runtime, postgres_engine)
    assert operations.skip(runtime, [POISONED]) == [POISONED]
    with pytest.raises(InvalidTransition, match="cannot skip it while it is skipped"):
        operations.skip(runtime, [POISONED])
    with pytest.raises(UnknownVersion):
        operations.skip(runtime, ["20991231000000"])


def test_wait_reports_success_failure_and_time_running_out(
    runtime: Runtime, postgres_engine: Engine
) -> None:
    failed_at_450(runtime, postgres_engine)
    copy_tasks(runtime.settings.tasks_dir, COUNT_FILE)

    pending = operations.wait(runtime, [COUNT], timeout=0)
    assert pending.timed_out and pending.unfinished == [COUNT]

    failed = operations.wait(runtime, timeout=0)
    assert not failed.succeeded and not failed.timed_out
    assert failed.failed == {POISONED: "failed: RuntimeError: item 450 is poisoned"}

    operations.run_inline(runtime, COUNT)
    assert operations.wait(runtime, [COUNT], timeout=0).succeeded
    with pytest.raises(UnknownVersion):
        operations.wait(runtime, ["20991231000000"], timeout=0)


def test_wait_says_a_task_behind_a_failed_dependency_is_blocked(
    runtime: Runtime, postgres_engine: Engine
) -> None:
    copy_tasks(runtime.settings.tasks_dir, FIRST_FILE, SECOND_FILE)
    create_items(postgres_engine, 10)
    operations.cancel(runtime, "20250302000000")

    outcome = operations.wait(runtime, [SECOND], timeout=60)

    assert outcome.failed == {SECOND: "blocked by 20250302000000 (cancelled)"}


def test_dry_run_reports_rows_per_batch_and_changes_nothing(
    runtime: Runtime, postgres_engine: Engine
) -> None:
    copy_tasks(runtime.settings.tasks_dir, COUNT_FILE)
    create_items(postgres_engine, 250)

    report = operations.dry_run(runtime, COUNT, batches=2)
    assert [(b.number, b.size, b.rows_changed, b.next_cursor) for b in report.batches] == [
        (1, 100, 100, 100),
        (2, 100, 100, 200),
    ]
    assert not report.exhausted and report.rows_changed == 200
    assert applied_counts(postgres_engine) == {0: 250}

    to_the_end = operations.dry_run(runtime, COUNT, batches=5)
    assert [b.rows_changed for b in to_the_end.batches] == [100, 100, 50]
    assert to_the_end.exhausted
    assert applied_counts(postgres_engine) == {0: 250}


def test_dry_run_starts_at_the_cursor_of_a_failed_task(
    runtime: Runtime, postgres_engine: Engine
) -> None:
    failed_at_450(runtime, postgres_engine)
    poison(postgres_engine, 450, label="cured")

    report = operations.dry_run(runtime, POISONED, batches=1)

    assert report.start_cursor == 400
    assert [(b.size, b.rows_changed) for b in report.batches] == [(100, 100)]
    assert applied_counts(postgres_engine) == {1: 400, 0: 600}


def test_run_inline_resumes_across_chunks_without_skipping_or_repeating(
    runtime: Runtime, postgres_engine: Engine
) -> None:
    copy_tasks(runtime.settings.tasks_dir, COUNT_FILE)
    create_items(postgres_engine, 1000)
    seen: list[int] = []

    run = operations.run_inline(
        runtime, COUNT, batches_per_chunk=3, on_chunk=lambda s: seen.append(s["batches"])
    )

    assert run.status == Status.SUCCEEDED
    assert seen == [3, 3, 3, 1]
    assert [c["outcome"] for c in run.chunks] == ["continued"] * 3 + ["succeeded"]
    assert applied_counts(postgres_engine) == {1: 1000}


def test_run_inline_refuses_a_task_waiting_on_another(
    runtime: Runtime, postgres_engine: Engine
) -> None:
    copy_tasks(runtime.settings.tasks_dir, FIRST_FILE, SECOND_FILE)
    create_items(postgres_engine, 10)
    with pytest.raises(DataTaskError, match="waits on 20250302000000: run or skip those first"):
        operations.run_inline(runtime, SECOND)


def test_show_has_the_whole_record_with_its_traceback(
    runtime: Runtime, postgres_engine: Engine
) -> None:
    failed_at_450(runtime, postgres_engine)
    view = operations.show(runtime, POISONED)
    assert view.record.traceback is not None
    assert view.record.traceback.rstrip().endswith("RuntimeError: item 450 is poisoned")
    assert view.as_dict()["cursor"] == 400


@pytest.mark.parametrize(
    "command",
    [
        operations.show,
        operations.retry,
        operations.resume,
        operations.rerun,
        operations.pause,
        operations.cancel,
        operations.dry_run,
        operations.run_inline,
    ],
)
def test_every_command_refuses_an_unknown_version(runtime: Runtime, command: Any) -> None:
    with pytest.raises(UnknownVersion, match="unknown data task version '20991231000000'"):
        command(runtime, "20991231000000")


CHECKED = "20250304000000"
CHECKED_FILE = "20250304000000_ops_checked_items.py"


def test_a_passing_check_lets_the_task_succeed(runtime: Runtime, postgres_engine: Engine) -> None:
    copy_tasks(runtime.settings.tasks_dir, CHECKED_FILE)
    create_items(postgres_engine, 300)

    run = operations.run_inline(runtime, CHECKED)

    assert run.status == Status.SUCCEEDED
    assert run.chunks[-1]["outcome"] == "succeeded"


def test_a_failing_check_fails_the_task_with_its_message(
    runtime: Runtime, postgres_engine: Engine
) -> None:
    copy_tasks(runtime.settings.tasks_dir, CHECKED_FILE)
    create_items(postgres_engine, 300)
    for item in (7, 70, 700 // 7):
        poison(postgres_engine, item, label="frozen")

    run = operations.run_inline(runtime, CHECKED)

    assert run.status == Status.FAILED
    assert run.chunks[-1]["outcome"] == "check_failed"
    failed = record(runtime, CHECKED)
    assert failed.last_error == "check failed: 3 items still have applied = 0"
    assert failed.processed == 297
    assert operations.wait(runtime, [CHECKED], timeout=0).failed == {
        CHECKED: "failed: check failed: 3 items still have applied = 0"
    }

    # Fixing the data and rerunning from the beginning makes the check pass.
    for item in (7, 70, 100):
        poison(postgres_engine, item, label="thawed")
    operations.rerun(runtime, CHECKED)
    drain(runtime)
    assert record(runtime, CHECKED).state == Status.SUCCEEDED
    assert record(runtime, CHECKED).last_error is None
