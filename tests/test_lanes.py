"""Lanes: every task runs as 1..N key ranges, each with its own cursor, epoch and lease."""

from __future__ import annotations

import json
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text

from data_tasks import operations
from data_tasks.lanes import TaskLane
from data_tasks.runner import run_chunk
from data_tasks.runtime import Runtime
from data_tasks.scheduler import enqueue
from data_tasks.settings import Settings
from data_tasks.status import Status
from tests.conftest import copy_tasks
from tests.items import applied_counts, create_items
from tests.processes import WorkerProcess, run_cli, run_hook, wait_for
from tests.running import drain, published, record, take

KEYSET = "20250601000000_count_items_in_shards.py"
ROWS = "20250602000000_count_item_rows_in_shards.py"
PAUSED = "20250603000000_paused_by_operator.py"


def lanes(runtime: Runtime, version: str) -> list[TaskLane]:
    """The lanes of a version, read fresh."""
    with runtime.session() as session:
        return list(
            session.scalars(
                select(TaskLane).where(TaskLane.version == version).order_by(TaskLane.lane)
            )
        )


@pytest.mark.parametrize(
    ("file", "version"), [(KEYSET, "20250601000000"), (ROWS, "20250602000000")]
)
def test_every_row_is_applied_once_across_interleaved_lanes(
    db_runtime: Runtime, file: str, version: str
) -> None:
    runtime = db_runtime
    # A tiny budget, so the lanes' chunks interleave as they would on several workers.
    runtime.settings = runtime.settings.with_(chunk_seconds=0.002)
    copy_tasks(runtime.settings.tasks_dir, file)
    create_items(runtime.engine, 2_000)

    enqueue(runtime)
    summaries = drain(runtime)

    assert applied_counts(runtime.engine) == {1: 2_000}
    assert summaries[-1]["outcome"] == "succeeded"
    found = lanes(runtime, version)
    parallel = 3 if file == KEYSET else 2
    assert [lane.lane for lane in found] == list(range(parallel))
    assert {summary["lane"] for summary in summaries} == set(range(parallel))
    assert all(lane.status == "succeeded" for lane in found)
    assert all(lane.total and lane.processed == lane.total for lane in found)
    done = record(runtime, version)
    assert (done.state, done.processed, done.total) == (Status.SUCCEEDED, 2_000, 2_000)


def test_a_resumed_run_fences_every_job_of_the_run_before(db_runtime: Runtime) -> None:
    runtime = db_runtime
    version = "20250601000000"
    copy_tasks(runtime.settings.tasks_dir, KEYSET)
    create_items(runtime.engine, 1_000)
    enqueue(runtime)
    [first] = take(runtime)
    runtime.settings = runtime.settings.with_(chunk_seconds=0.0)
    assert run_chunk(runtime, first)["outcome"] == "continued"  # one batch, then hands off
    old_jobs = take(runtime)
    assert sorted(job.lane for job in old_jobs) == [0, 1, 2]

    operations.pause(runtime, version)
    operations.resume(runtime, version)
    new_jobs = take(runtime)

    assert [run_chunk(runtime, job)["outcome"] for job in old_jobs] == ["stale"] * 3
    assert applied_counts(runtime.engine) == {1: 100, 0: 900}
    runtime.settings = runtime.settings.with_(chunk_seconds=30.0)
    for job in new_jobs:
        runtime.publisher.publish(job)
    drain(runtime)
    assert applied_counts(runtime.engine) == {1: 1_000}
    assert record(runtime, version).state is Status.SUCCEEDED


def test_a_lane_commits_nothing_once_the_task_is_paused(db_runtime: Runtime) -> None:
    runtime = db_runtime
    version = "20250603000000"
    copy_tasks(runtime.settings.tasks_dir, PAUSED)
    create_items(runtime.engine, 600)
    enqueue(runtime)
    [first] = take(runtime)

    summary = run_chunk(runtime, first)

    assert summary["outcome"] == "fenced"
    assert applied_counts(runtime.engine) == {1: 100, 0: 500}
    assert [lane.processed for lane in lanes(runtime, version)] == [100, 0]
    # The other lane's job, published at the start, finds the task paused.
    [other] = take(runtime)
    assert run_chunk(runtime, other)["outcome"] == "stale"
    assert record(runtime, version).state is Status.PAUSED


def test_rerun_of_a_task_in_lanes_applies_every_row_once_more(db_runtime: Runtime) -> None:
    runtime = db_runtime
    version = "20250601000000"
    copy_tasks(runtime.settings.tasks_dir, KEYSET)
    create_items(runtime.engine, 1_500)
    enqueue(runtime)
    drain(runtime)
    assert applied_counts(runtime.engine) == {1: 1_500}

    operations.rerun(runtime, version)
    drain(runtime)

    assert applied_counts(runtime.engine) == {2: 1_500}
    done = record(runtime, version)
    assert (done.state, done.processed) == (Status.SUCCEEDED, 1_500)
    assert [lane.processed for lane in lanes(runtime, version)] == [500, 500, 500]


def test_a_failed_lane_fails_the_task_and_retry_resumes_every_lane(runtime: Runtime) -> None:
    version = "20250601000000"
    runtime.settings = runtime.settings.with_(max_attempts=1, chunk_seconds=0.0)
    copy_tasks(runtime.settings.tasks_dir, KEYSET)
    create_items(runtime.engine, 900)
    with runtime.engine.begin() as connection:
        connection.execute(
            text("ALTER TABLE items ADD CONSTRAINT poison CHECK (applied < 1 OR id <> 650)")
        )
    enqueue(runtime)
    drain(runtime)

    failed = record(runtime, version)
    assert failed.state is Status.FAILED
    assert (failed.last_error or "").startswith("lane 2: IntegrityError")
    with runtime.engine.begin() as connection:
        connection.execute(text("ALTER TABLE items DROP CONSTRAINT poison"))
    operations.retry(runtime, version)
    drain(runtime)

    assert applied_counts(runtime.engine) == {1: 900}
    assert record(runtime, version).state is Status.SUCCEEDED


def test_status_shows_each_lane(db_runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    from deploy_hooks.cli import main

    runtime = db_runtime
    copy_tasks(runtime.settings.tasks_dir, KEYSET)
    create_items(runtime.engine, 900)
    enqueue(runtime)
    run_chunk(runtime, take(runtime)[0])  # lane 0 only: budget large enough to finish it
    settings = runtime.settings
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("DATA_TASKS_DIR", str(settings.tasks_dir))

    out = StringIO()
    with redirect_stdout(out):
        assert main(["status"]) == 0
    assert "3 lanes" in out.getvalue()
    assert "lane 0  succeeded [####################] 300/300" in out.getvalue()
    # An unfinished lane's total is the estimate made at the start: marked with ~.
    assert "lane 1  enqueued  [....................] 0/~300" in out.getvalue()

    out = StringIO()
    with redirect_stdout(out):
        assert main(["status", "--json"]) == 0
    [row] = json.loads(out.getvalue())
    assert [(s["lane"], s["status"], s["processed"]) for s in row["lanes"]] == [
        (0, "succeeded", 300),
        (1, "enqueued", 0),
        (2, "enqueued", 0),
    ]
    assert (row["processed"], row["total"]) == (300, 900)
    assert len(published(runtime)) == 2


@pytest.mark.e2e
def test_real_workers_run_the_lanes_side_by_side(
    pg_settings: Settings, postgres_engine: Engine, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    settings = pg_settings.with_(chunk_seconds=0.2)
    copy_tasks(settings.tasks_dir, KEYSET)
    create_items(postgres_engine, 30_000)

    hook = run_hook(settings)
    assert hook.returncode == 0, hook.stderr
    workers.append(WorkerProcess(settings, tmp_path, concurrency=2).wait_ready())

    def succeeded() -> bool:
        result = run_cli(settings, "status", "--json")
        return bool(
            result.returncode == 0 and json.loads(result.stdout)[0]["status"] == "succeeded"
        )

    wait_for(succeeded, timeout=120)
    assert applied_counts(postgres_engine) == {1: 30_000}
    [row] = json.loads(run_cli(settings, "status", "--json").stdout)
    assert [(s["lane"], s["status"]) for s in row["lanes"]] == [
        (0, "succeeded"),
        (1, "succeeded"),
        (2, "succeeded"),
    ]
    assert row["processed"] == 30_000
    log = workers[0].log()
    # Both pool processes ran chunks.
    assert "ForkPoolWorker-1] event=chunk" in log
    assert "ForkPoolWorker-2] event=chunk" in log
