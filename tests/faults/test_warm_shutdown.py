"""SIGTERM, as a deploy's restart sends: the batch in flight finishes and a successor is queued."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine

from data_tasks.settings import Settings
from tests.faults.harness import (
    ROWS,
    SLOW,
    backfill,
    exactly_once,
    fault_settings,
    hook_ok,
    log_lines,
    queued_messages,
    record,
    wait_progress,
    wait_status,
)
from tests.faults.ledger import FaultCase
from tests.processes import WorkerProcess

pytestmark = pytest.mark.e2e

STOPS = 3


def test_sigterm_hands_the_backfill_to_the_next_worker(
    pg_settings: Settings,
    postgres_engine: Engine,
    redis_client: redis.Redis,
    workers: list[WorkerProcess],
    tmp_path: Path,
    faults: FaultCase,
) -> None:
    faults.describe("Warm shutdown (SIGTERM to the main process, as a deploy restart sends)")
    # One chunk could run the whole backfill: only the shutdown makes it stop early.
    settings = fault_settings(pg_settings).with_(chunk_seconds=60.0)
    backfill(settings, postgres_engine)
    hook_ok(settings)

    for _ in range(STOPS):
        worker = WorkerProcess(settings, tmp_path)
        workers.append(worker)
        worker.wait_ready()
        wait_progress(postgres_engine, SLOW, record(postgres_engine, SLOW)["processed"] + 5_000)
        faults.inject("SIGTERM", SLOW)
        assert worker.stop() == 0
        # The chunk stopped between batches, recorded its cursor and queued its successor.
        assert log_lines(worker.log(), "event=chunk_done", 'reason="worker shutting down"')
        stopped = record(postgres_engine, SLOW)
        assert stopped["lane_status"] == "enqueued", stopped
        assert 0 < stopped["processed"] < ROWS
        assert stopped["cursor"] == str(stopped["processed"])
        successors = [m for m in queued_messages(redis_client) if m["version"] == SLOW]
        assert successors == [
            {"task": "data_tasks.run_chunk", "version": SLOW, "epoch": stopped["epoch"]}
            | {"unknown_retries": 0, "lane": 0}
        ]

    # No deploy hook: the next worker picks up the successor the last one queued.
    workers.append(WorkerProcess(settings, tmp_path).wait_ready())
    wait_status(postgres_engine, SLOW, "succeeded", timeout=120)
    exactly_once(postgres_engine)


def test_heroku_style_sigterm_to_every_process_with_remap_sigterm(
    pg_settings: Settings,
    postgres_engine: Engine,
    redis_client: redis.Redis,
    workers: list[WorkerProcess],
    tmp_path: Path,
    faults: FaultCase,
) -> None:
    faults.describe(
        "SIGTERM to every process, with `REMAP_SIGTERM=SIGQUIT` and a soft shutdown timeout "
        "(Heroku)"
    )
    settings = fault_settings(pg_settings).with_(chunk_seconds=60.0)
    backfill(settings, postgres_engine)
    hook_ok(settings)
    heroku = {"REMAP_SIGTERM": "SIGQUIT", "DATA_TASKS_SOFT_SHUTDOWN_SECONDS": "3"}
    worker = WorkerProcess(settings, tmp_path, extra_env=heroku)
    workers.append(worker)
    worker.wait_ready()
    wait_progress(postgres_engine, SLOW, 20_000)
    # Heroku sends SIGTERM to every process of the dyno, the pool's children included.
    faults.inject("SIGTERM to the whole group", SLOW)
    worker.signal(signal.SIGTERM, whole_group=True)
    worker.process.wait(timeout=60)
    assert log_lines(worker.log(), "event=chunk_done", 'reason="worker shutting down"')
    stopped = record(postgres_engine, SLOW)
    assert stopped["lane_status"] == "enqueued" and 0 < stopped["processed"] < ROWS, stopped
    assert [m["epoch"] for m in queued_messages(redis_client)] == [stopped["epoch"]]

    workers.append(WorkerProcess(settings, tmp_path).wait_ready())
    wait_status(postgres_engine, SLOW, "succeeded", timeout=120)
    exactly_once(postgres_engine)
