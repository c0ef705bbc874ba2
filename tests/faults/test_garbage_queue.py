"""JSON on the data task queue that is not a Celery message: dropped with one line each.

Anyone with access to Redis can LPUSH onto the queue; the worker must not stop its consumer
(which cancels the chunks it runs) over an entry it cannot use.
"""

from __future__ import annotations

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
    wait_progress,
    wait_status,
)
from tests.faults.ledger import FaultCase
from tests.processes import WorkerProcess

pytestmark = pytest.mark.e2e

GARBAGE = [b"{}", b"[]", b'"x"', b"42", b'{"properties": []}']


def test_json_entries_that_are_not_messages_are_dropped_while_a_backfill_runs(
    pg_settings: Settings,
    postgres_engine: Engine,
    redis_client: redis.Redis,
    workers: list[WorkerProcess],
    tmp_path: Path,
    faults: FaultCase,
) -> None:
    faults.describe("JSON entries that are not chunk messages pushed onto the queue mid-backfill")
    settings = fault_settings(pg_settings)
    backfill(settings, postgres_engine)
    worker = WorkerProcess(settings, tmp_path, concurrency=2)
    workers.append(worker)
    worker.wait_ready()
    hook_ok(settings)
    wait_progress(postgres_engine, SLOW, beyond=0)

    for entry in GARBAGE:
        redis_client.lpush(settings.queue, entry)

    wait_status(postgres_engine, SLOW, "succeeded", timeout=120)
    exactly_once(postgres_engine, ROWS)
    log = worker.log()
    dropped = log_lines(log, "dropped a queue entry of data_tasks that is not a message")
    assert len(dropped) == len(GARBAGE), dropped
    assert "KeyError" not in log and "Traceback" not in log
    assert "Restoring" not in log and "consumer: Connection to broker lost" not in log
    assert worker.alive
