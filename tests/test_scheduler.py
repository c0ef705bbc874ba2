"""The deploy hook's pass: order, idempotence, lost jobs, stale runs, concurrent hooks."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import update

from data_tasks.errors import InvalidTaskFile
from data_tasks.lanes import LaneStatus, TaskLane
from data_tasks.publisher import RecordingPublisher
from data_tasks.records import load_all, move, utcnow
from data_tasks.runner import run_chunk
from data_tasks.runtime import Runtime
from data_tasks.scheduler import EnqueueReport, enqueue
from data_tasks.settings import Settings
from data_tasks.status import Status
from tests.conftest import copy_tasks
from tests.items import applied_counts, create_items
from tests.running import drain, lane, published, record, take

COUNT = "20250101000000"
AFTER_THE_REST = "20250109000000"


def start_running(runtime: Runtime, version: str, epoch: int, beat_seconds_ago: float) -> None:
    """Put a record and its lane where a worker's chunk puts them when it starts."""
    with runtime.session() as session, session.begin():
        beat = utcnow() - timedelta(seconds=beat_seconds_ago)
        values = {"heartbeat_at": beat, "started_at": beat, "worker": "w1"}
        assert move(session, version, Status.ENQUEUED, Status.RUNNING, epoch, values)
        session.execute(
            update(TaskLane)
            .where(TaskLane.version == version, TaskLane.lane == 0)
            .values(status=LaneStatus.RUNNING.value, epoch=TaskLane.epoch + 1, heartbeat_at=beat)
        )


def hold_lease(runtime: Runtime, version: str) -> None:
    """Hold lane 0's lease, as a live worker's lease thread does."""
    runtime.coordinator.client.set(runtime.coordinator.lease_key(version, 0), "w1")


def drop_lease(runtime: Runtime, version: str) -> None:
    """Let lane 0's lease lapse, as it does once its worker died."""
    runtime.coordinator.client.delete(runtime.coordinator.lease_key(version, 0))


def test_a_later_task_waits_for_every_earlier_one_then_the_worker_enqueues_it(
    runtime: Runtime, postgres_engine: object
) -> None:
    copy_tasks(
        runtime.settings.tasks_dir,
        "20250101000000_count_items.py",
        "20250109000000_count_items_after_the_rest.py",
    )
    create_items(runtime.engine, 3_000)

    report = enqueue(runtime)

    assert [item.version for item in report.enqueued] == [COUNT]
    assert report.waiting == {AFTER_THE_REST: [COUNT]}
    assert record(runtime, AFTER_THE_REST).state is Status.PENDING

    # No second deploy hook: the chunk that finishes the first task enqueues the second.
    summaries = drain(runtime)

    assert [s["version"] for s in summaries if s["outcome"] == "succeeded"] == [
        COUNT,
        AFTER_THE_REST,
    ]
    assert applied_counts(runtime.engine) == {2: 3_000}
    assert record(runtime, AFTER_THE_REST).state is Status.SUCCEEDED


def test_a_task_with_explicit_empty_dependencies_runs_at_once(runtime: Runtime) -> None:
    copy_tasks(
        runtime.settings.tasks_dir,
        "20250101000000_count_items.py",
        "20250102000000_count_even_items.py",
        "20250109000000_count_items_after_the_rest.py",
    )
    create_items(runtime.engine, 100)

    report = enqueue(runtime)

    assert [item.version for item in report.enqueued] == [COUNT, "20250102000000"]
    assert report.waiting == {AFTER_THE_REST: [COUNT, "20250102000000"]}


def test_a_failed_task_blocks_the_tasks_after_it(runtime: Runtime) -> None:
    copy_tasks(
        runtime.settings.tasks_dir,
        "20250106000000_always_fails.py",
        "20250109000000_count_items_after_the_rest.py",
    )
    create_items(runtime.engine, 100)

    enqueue(runtime)
    drain(runtime)
    report = enqueue(runtime)

    assert record(runtime, "20250106000000").state is Status.FAILED
    assert report.enqueued == []
    assert report.failed == ["20250106000000"]
    assert report.waiting == {AFTER_THE_REST: ["20250106000000"]}
    assert applied_counts(runtime.engine) == {0: 100}


def test_a_second_hook_while_the_task_is_enqueued_or_running_enqueues_nothing(
    runtime: Runtime,
) -> None:
    copy_tasks(runtime.settings.tasks_dir, "20250101000000_count_items.py")
    create_items(runtime.engine, 100)
    assert len(enqueue(runtime).enqueued) == 1

    while_enqueued = enqueue(runtime)
    hold_lease(runtime, COUNT)
    start_running(runtime, COUNT, epoch=1, beat_seconds_ago=0)
    while_running = enqueue(runtime)
    drop_lease(runtime, COUNT)
    while_running_unlocked = enqueue(runtime)  # a fresh heartbeat is enough

    for report in (while_enqueued, while_running, while_running_unlocked):
        assert report.enqueued == []
        assert report.in_flight == [COUNT]
    assert len(published(runtime)) == 1
    assert (record(runtime, COUNT).epoch, lane(runtime, COUNT).epoch) == (1, 1)


def test_a_hook_after_success_enqueues_nothing(runtime: Runtime) -> None:
    copy_tasks(runtime.settings.tasks_dir, "20250101000000_count_items.py")
    create_items(runtime.engine, 100)
    enqueue(runtime)
    drain(runtime)

    report = enqueue(runtime)

    assert (report.enqueued, report.in_flight, report.waiting) == ([], [], {})
    assert published(runtime) == []
    assert applied_counts(runtime.engine) == {1: 100}


def test_a_failed_task_is_enqueued_again_only_once_its_file_changed(runtime: Runtime) -> None:
    [path] = [
        copy_tasks(runtime.settings.tasks_dir, "20250106000000_always_fails.py")
        / "20250106000000_always_fails.py"
    ]
    enqueue(runtime)
    drain(runtime)
    assert record(runtime, "20250106000000").state is Status.FAILED

    unchanged = enqueue(runtime)
    path.write_text(path.read_text() + "# fixed, say\n")
    changed = enqueue(runtime)

    assert unchanged.enqueued == [] and unchanged.failed == ["20250106000000"]
    assert [(e.version, e.reason) for e in changed.enqueued] == [
        ("20250106000000", "resumed: its file changed")
    ]
    resumed = record(runtime, "20250106000000")
    assert (resumed.state, resumed.attempts) == (Status.ENQUEUED, 0)
    assert len(published(runtime)) == 1


def test_a_job_lost_from_redis_is_published_again_and_the_old_one_is_fenced(
    runtime: Runtime, redis_client: redis.Redis
) -> None:
    copy_tasks(runtime.settings.tasks_dir, "20250101000000_count_items.py")
    create_items(runtime.engine, 2_000)
    enqueue(runtime)
    [lost] = take(runtime)

    redis_client.flushdb()  # a Redis restart without persistence loses the queue
    report = enqueue(runtime)

    assert [(e.version, e.epoch, e.reason) for e in report.enqueued] == [
        (COUNT, 1, "re-published: its job was lost")
    ]
    # The same job again: should the lost copy turn up after all, only one of them starts.
    [again] = published(runtime)
    assert again == lost
    assert run_chunk(runtime, lost)["outcome"] in ("continued", "succeeded")
    summaries = drain(runtime)
    assert summaries[0]["outcome"] == "stale"
    assert applied_counts(runtime.engine) == {1: 2_000}


def test_a_run_whose_worker_stopped_beating_is_reclaimed(runtime: Runtime) -> None:
    copy_tasks(runtime.settings.tasks_dir, "20250101000000_count_items.py")
    create_items(runtime.engine, 2_000)
    enqueue(runtime)
    take(runtime)
    stale = runtime.settings.stale_seconds
    start_running(runtime, COUNT, epoch=1, beat_seconds_ago=stale * 10)

    hold_lease(runtime, COUNT)
    while_locked = enqueue(runtime)  # an old heartbeat but a live lease: a slow batch, not dead
    drop_lease(runtime, COUNT)
    report = enqueue(runtime)

    assert while_locked.enqueued == [] and while_locked.in_flight == [COUNT]
    assert [(e.version, e.epoch, e.reason) for e in report.enqueued] == [
        (COUNT, 1, "reclaimed: its worker stopped beating")
    ]
    # The reclaimed lane's job starts it at a new epoch, which fences the dead runner.
    assert [(m.version, m.lane, m.epoch) for m in published(runtime)] == [(COUNT, 0, 1)]
    drain(runtime)
    assert record(runtime, COUNT).state is Status.SUCCEEDED
    assert applied_counts(runtime.engine) == {1: 2_000}


def test_concurrent_hooks_publish_each_task_once(pg_settings: Settings, tasks_dir: Path) -> None:
    copy_tasks(
        tasks_dir,
        "20250101000000_count_items.py",
        "20250102000000_count_even_items.py",
        "20250103000000_count_item_rows.py",
    )
    publisher = RecordingPublisher()
    hooks = 6
    barrier = threading.Barrier(hooks)
    reports: list[EnqueueReport] = []

    def deploy_hook() -> None:
        runtime = Runtime.build(pg_settings, publisher)
        try:
            barrier.wait()
            reports.append(enqueue(runtime))
        finally:
            runtime.close()

    threads = [threading.Thread(target=deploy_hook) for _ in range(hooks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(reports) == hooks
    published_versions = sorted(message.version for message, _ in publisher.messages)
    assert published_versions == [COUNT, "20250102000000", "20250103000000"]
    assert sorted(e.version for report in reports for e in report.enqueued) == published_versions


def test_an_invalid_file_stops_the_pass_before_anything_is_recorded(runtime: Runtime) -> None:
    copy_tasks(runtime.settings.tasks_dir, "20250101000000_count_items.py")
    broken = runtime.settings.tasks_dir / "20250102000000_broken.py"
    broken.write_text("from data_tasks import one_shot\n\nthis is not python\n")

    with pytest.raises(InvalidTaskFile, match=r"20250102000000_broken\.py"):
        enqueue(runtime)

    with runtime.session() as session:
        assert load_all(session) == {}
    assert published(runtime) == []
