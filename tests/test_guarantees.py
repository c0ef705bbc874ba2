"""The promises hold for the tasks users write on their first day and the deploys that go wrong.

A process may stop at any step between a claim and a lane's first batch: the next sweep gives
the task a live job. An error before the first batch is an attempt like any other. A worker
whose file differs from the deployed one passes the job on. The hook never waits on a batch.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from data_tasks import operations
from data_tasks.records import TaskRecord
from data_tasks.runner import run_chunk
from data_tasks.runtime import Runtime
from data_tasks.scheduler import enqueue
from data_tasks.status import Status
from deploy_hooks.cli import main
from tests.conftest import copy_tasks
from tests.items import applied_counts, create_items
from tests.running import drain, lane, published, record, take

COUNT = ("20250101000000_count_items.py", "20250101000000")
IN_LANES = ("20250601000000_count_items_in_shards.py", "20250601000000")
ONE_SHOT = ("20250105000000_count_items_at_once.py", "20250105000000")
STEPS = ["claimed", "taken", "started", "planned"]


class Stopped(BaseException):
    """The process stopped here: nothing after this line of its runs (like kill -9)."""


def stop_once_at(step: str) -> tuple[list[str], object]:
    """An on_step hook that stops the process the first time it reaches `step`."""
    seen: list[str] = []

    def on_step(name: str) -> None:
        seen.append(name)
        if name == step and seen.count(step) == 1:
            raise Stopped(step)

    return seen, on_step


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("task", [COUNT, IN_LANES, ONE_SHOT], ids=["keyset", "lanes", "one-shot"])
def test_a_process_stopped_at_any_step_before_the_first_batch_is_recovered_by_one_sweep(
    db_runtime: Runtime, step: str, task: tuple[str, str]
) -> None:
    file, version = task
    # Stale at once: the sweep may reclaim a lane as soon as its lease is gone.
    runtime = db_runtime
    runtime.settings = runtime.settings.with_(stale_seconds=0.0)
    copy_tasks(runtime.settings.tasks_dir, file)
    create_items(runtime.engine, 1_000)
    seen, on_step = stop_once_at(step)
    stopping = replace(runtime, on_step=on_step)  # type: ignore[arg-type]

    try:
        enqueue(stopping)
        while published(runtime):
            message = take(runtime)[0]
            for other in take(runtime):
                runtime.publisher.publish(other)
            run_chunk(stopping, message)
    except Stopped:
        pass
    assert step in seen, f"the run never reached {step!r}"
    take(runtime)  # whatever the stopped process published is lost with it

    report = enqueue(runtime)  # one sweep
    drain(runtime)

    assert report.enqueued, f"the sweep found nothing to do after a stop at {step!r}"
    assert record(runtime, version).state is Status.SUCCEEDED
    expected = {1: 1_000}
    assert applied_counts(runtime.engine) == expected


def test_a_task_whose_table_is_not_migrated_yet_fails_after_its_attempts(
    db_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = db_runtime
    runtime.settings = runtime.settings.with_(max_attempts=3)
    copy_tasks(runtime.settings.tasks_dir, "20250803000000_not_migrated_yet.py")
    version = "20250803000000"

    enqueue(runtime)
    summaries = drain(runtime)

    assert [s["outcome"] for s in summaries] == ["retrying", "retrying", "failed"]
    failed = record(runtime, version)
    assert failed.state is Status.FAILED and failed.attempts == 3
    assert "not_migrated_yet" in (failed.last_error or "")
    assert failed.traceback and "Traceback" in failed.traceback
    settings = runtime.settings
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("DATA_TASKS_DIR", str(settings.tasks_dir))
    assert main(["wait", version, "--timeout", "5"]) == 1


def test_the_file_new_writes_fails_cleanly_when_run_as_is(
    db_runtime: Runtime, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    runtime = db_runtime
    runtime.settings = runtime.settings.with_(max_attempts=2)
    settings = runtime.settings
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("DATA_TASKS_DIR", str(settings.tasks_dir))
    assert main(["new", "backfill_orders"]) == 0
    [path] = Path(settings.tasks_dir).glob("*_backfill_orders.py")
    version = path.name[:14]

    enqueue(runtime)
    drain(runtime)

    # Not stuck enqueued with attempts 0: the template's table does not exist here.
    done = record(runtime, version)
    assert done.state is Status.FAILED and done.attempts == 2, (done.status, done.last_error)


def test_a_worker_whose_file_differs_from_the_deployed_one_passes_the_job_on(
    db_runtime: Runtime,
) -> None:
    runtime = db_runtime
    tasks = copy_tasks(runtime.settings.tasks_dir, COUNT[0])
    create_items(runtime.engine, 500)
    path = tasks / COUNT[0]
    enqueue(runtime)  # the deploy recorded this file's hash
    deployed = path.read_text()
    # This worker runs another release: its file adds 10 instead of 1.
    path.write_text(deployed.replace("applied + 1", "applied + 10"))
    [message] = take(runtime)

    summary = run_chunk(runtime, message)

    assert summary["outcome"] == "passed_on"
    assert applied_counts(runtime.engine) == {0: 500}
    [again] = take(runtime)
    assert (again.version, again.epoch, again.unknown_retries) == (COUNT[1], 0, 1)
    # Once this release is the deployed one (its hook records the hash), it runs.
    enqueue(runtime)
    runtime.publisher.publish(again)
    drain(runtime)
    assert applied_counts(runtime.engine) == {10: 500}


def test_the_throttle_is_asked_again_after_every_back_off(db_runtime: Runtime) -> None:
    runtime = db_runtime
    copy_tasks(runtime.settings.tasks_dir, "20250801000000_throttle_alternating.py")
    create_items(runtime.engine, 500)
    task = runtime.catalog.task("20250801000000")
    throttle = task.throttles[0]
    asked: list[float] = throttle.__globals__["asked"]

    enqueue(runtime)
    drain(runtime)

    assert applied_counts(runtime.engine) == {1: 500}
    # Five batches and the empty plan that finds the end: each asked twice, back-off then go.
    assert asked == [0.02, 0.0] * 6


def test_a_throttle_back_off_ends_when_the_worker_shuts_down(
    runtime: Runtime, redis_client: object
) -> None:
    copy_tasks(runtime.settings.tasks_dir, "20250804000000_always_busy.py")
    create_items(runtime.engine, 300)
    enqueue(runtime)
    [message] = take(runtime)
    flag = threading.Timer(0.5, runtime.coordinator.set_shutting_down, args=(runtime.hostname,))
    flag.start()
    started = time.monotonic()

    summary = run_chunk(runtime, message)

    assert summary["outcome"] == "continued" and summary["reason"] == "throttled"
    assert time.monotonic() - started < 5.0
    assert len(published(runtime)) == 1


def test_a_stale_runner_never_runs_the_checks(db_runtime: Runtime) -> None:
    runtime = db_runtime
    copy_tasks(runtime.settings.tasks_dir, "20250802000000_checked_then_fenced.py")
    create_items(runtime.engine, 1_000)
    enqueue(runtime)
    [message] = take(runtime)

    summary = run_chunk(runtime, message)

    assert summary["outcome"] == "fenced"
    with runtime.engine.connect() as connection:
        label = connection.execute(text("SELECT label FROM items WHERE id = 1")).scalar_one()
    assert label != "checked"
    assert record(runtime, "20250802000000").state is Status.RUNNING


def test_the_hook_and_pause_never_wait_on_a_running_batch(
    runtime: Runtime, postgres_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ONE_SHOT_SECONDS", "4")
    runtime.settings = runtime.settings.with_(stale_seconds=0.0)
    copy_tasks(runtime.settings.tasks_dir, "20250605000000_long_one_shot.py")
    create_items(postgres_engine, 10)
    version = "20250605000000"
    enqueue(runtime)
    [message] = take(runtime)
    worker = threading.Thread(target=run_chunk, args=(runtime, message))
    worker.start()
    while lane(runtime, version).status != "running":
        time.sleep(0.05)
    time.sleep(0.3)  # inside the batch: the lane's row is locked until it commits
    # Its lease lapses (a Redis restart): the sweep would reclaim it, but the batch holds the row.
    runtime.coordinator.client.delete(runtime.coordinator.lease_key(version, 0))

    started = time.monotonic()
    report = enqueue(runtime)
    hook_seconds = time.monotonic() - started
    paused_from = operations.pause(runtime, version)
    pause_seconds = time.monotonic() - started - hook_seconds
    worker.join()

    assert hook_seconds < 1.0 and pause_seconds < 1.0, (hook_seconds, pause_seconds)
    assert report.enqueued == [] and report.in_flight == [version]
    assert paused_from is Status.RUNNING
    # The batch committed before the pause took effect: applied once, and not again.
    assert applied_counts(postgres_engine) == {1: 10}
    with runtime.session() as session:
        found = session.get(TaskRecord, version)
        assert found is not None and found.state is Status.PAUSED
