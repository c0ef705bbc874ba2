"""Parallel shards: one key range per shard, each fenced per batch, the task done when all are."""

from __future__ import annotations

import json
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from data_tasks.publisher import ChunkMessage
from data_tasks.records import move
from data_tasks.runner import Fenced, run_chunk
from data_tasks.runtime import Runtime
from data_tasks.scheduler import enqueue
from data_tasks.settings import Settings
from data_tasks.shards import TaskShard, _run_one_batch, _start_shard
from data_tasks.status import Status
from tests.conftest import copy_tasks
from tests.items import applied_counts, create_items
from tests.processes import WorkerProcess, run_cli, run_hook, wait_for
from tests.running import drain, record, take

KEYSET = "20250601000000_count_items_in_shards.py"
ROWS = "20250602000000_count_item_rows_in_shards.py"


def shards(runtime: Runtime, version: str) -> list[TaskShard]:
    """The shard rows of a version, read fresh."""
    with runtime.session() as session:
        return list(session.query(TaskShard).filter_by(version=version).order_by(TaskShard.shard))


@pytest.mark.parametrize(
    ("file", "version"), [(KEYSET, "20250601000000"), (ROWS, "20250602000000")]
)
def test_every_row_is_applied_once_across_interleaved_shards(
    db_runtime: Runtime, file: str, version: str
) -> None:
    runtime = db_runtime
    # A tiny budget, so the shards' chunks interleave as they would on several workers.
    runtime.settings = runtime.settings.with_(chunk_seconds=0.002)
    copy_tasks(runtime.settings.tasks_dir, file)
    create_items(runtime.engine, 2_000)

    enqueue(runtime)
    summaries = drain(runtime)

    assert applied_counts(runtime.engine) == {1: 2_000}
    assert summaries[0]["outcome"] == "sharded"
    assert summaries[-1]["outcome"] == "succeeded"
    found = shards(runtime, version)
    parallel = 3 if file == KEYSET else 2
    assert [shard.shard for shard in found] == list(range(parallel))
    assert all(shard.status == "succeeded" for shard in found)
    assert sum(shard.processed for shard in found) == 2_000
    assert all(shard.total and shard.processed == shard.total for shard in found)
    done = record(runtime, version)
    assert (done.state, done.processed, done.total) == (Status.SUCCEEDED, 2_000, 2_000)


def test_a_reclaim_fences_the_old_epochs_shard_jobs(db_runtime: Runtime) -> None:
    runtime = db_runtime
    version = "20250601000000"
    copy_tasks(runtime.settings.tasks_dir, KEYSET)
    create_items(runtime.engine, 1_000)
    enqueue(runtime)
    [parent] = take(runtime)
    assert run_chunk(runtime, parent)["outcome"] == "sharded"
    old_jobs = take(runtime)
    assert [job.shard for job in old_jobs] == [0, 1, 2]

    # The sweep reclaims the run (its workers died): a new claim, a new epoch, new shard jobs.
    claimed = parent.epoch + 1
    with runtime.session() as session, session.begin():
        values = {"epoch": claimed + 1}
        assert move(session, version, Status.RUNNING, Status.ENQUEUED, claimed, values)
    assert run_chunk(runtime, ChunkMessage(version, claimed + 1))["outcome"] == "sharded"
    new_jobs = take(runtime)

    assert [run_chunk(runtime, job)["outcome"] for job in old_jobs] == ["stale"] * 3
    assert applied_counts(runtime.engine) == {0: 1_000}
    for job in new_jobs:
        runtime.publisher.publish(job)
    drain(runtime)
    assert applied_counts(runtime.engine) == {1: 1_000}
    assert record(runtime, version).state is Status.SUCCEEDED


def test_a_batch_commits_nothing_once_the_task_is_paused(db_runtime: Runtime) -> None:
    runtime = db_runtime
    version = "20250601000000"
    copy_tasks(runtime.settings.tasks_dir, KEYSET)
    create_items(runtime.engine, 600)
    enqueue(runtime)
    [parent] = take(runtime)
    run_chunk(runtime, parent)
    first = take(runtime)[0]
    task = runtime.catalog.task(version)
    started = _start_shard(runtime, task, first)
    assert started is not None
    chunk, upper = started

    with runtime.session() as session, session.begin():
        assert move(session, version, Status.RUNNING, Status.PAUSED, first.epoch)
    with runtime.session() as session, pytest.raises(Fenced):
        _run_one_batch(session, task, chunk, 0, upper)

    assert applied_counts(runtime.engine) == {0: 600}
    assert shards(runtime, version)[0].processed == 0


def test_status_shows_each_shard(db_runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    from deploy_hooks.cli import main

    runtime = db_runtime
    copy_tasks(runtime.settings.tasks_dir, KEYSET)
    create_items(runtime.engine, 900)
    enqueue(runtime)
    run_chunk(runtime, take(runtime)[0])
    run_chunk(runtime, take(runtime)[0])  # shard 0 only: budget large enough to finish it
    settings = runtime.settings
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("DATA_TASKS_DIR", str(settings.tasks_dir))

    out = StringIO()
    with redirect_stdout(out):
        assert main(["status"]) == 0
    assert "3 parallel shards" in out.getvalue()
    assert "shard 0  succeeded [####################] 300/300" in out.getvalue()
    assert "shard 1  running   [....................] 0/300" in out.getvalue()

    out = StringIO()
    with redirect_stdout(out):
        assert main(["status", "--json"]) == 0
    [row] = json.loads(out.getvalue())
    assert [(s["shard"], s["status"], s["processed"]) for s in row["shards"]] == [
        (0, "succeeded", 300),
        (1, "running", 0),
        (2, "running", 0),
    ]
    with runtime.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM task_shards")).scalar_one() == 3


@pytest.mark.e2e
def test_real_workers_run_the_shards_side_by_side(
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
    assert [(s["shard"], s["status"]) for s in row["shards"]] == [
        (0, "succeeded"),
        (1, "succeeded"),
        (2, "succeeded"),
    ]
    assert row["processed"] == 30_000
    log = workers[0].log()
    # Both pool processes ran shard chunks.
    assert "ForkPoolWorker-1] event=shard_chunk_done" in log
    assert "ForkPoolWorker-2] event=shard_chunk_done" in log
