"""The same chunk message delivered twice to two workers: one runs it, the other stops cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine

from data_tasks.publisher import JOB_NAME
from data_tasks.settings import Settings
from tests.faults.harness import (
    ROWS,
    SLOW,
    backfill,
    exactly_once,
    fault_settings,
    hook_ok,
    ledger,
    log_lines,
    record,
    wait_status,
)
from tests.processes import WorkerProcess
from worker.app import make_app

pytestmark = pytest.mark.e2e


def test_a_message_delivered_twice_runs_once(
    pg_settings: Settings,
    postgres_engine: Engine,
    redis_client: redis.Redis,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    settings = fault_settings(pg_settings)
    backfill(settings, postgres_engine)
    first = WorkerProcess(settings, tmp_path)
    second = WorkerProcess(settings, tmp_path)
    workers += [first, second]
    first.wait_ready()
    second.wait_ready()

    hook_ok(settings)
    app = make_app(settings)
    # The very message the hook published, once more.
    epoch = record(postgres_engine, SLOW)["epoch"]
    kwargs = {"version": SLOW, "epoch": epoch, "unknown_retries": 0}
    app.send_task(JOB_NAME, kwargs=kwargs, queue=settings.queue)

    wait_status(postgres_engine, SLOW, "succeeded", timeout=120)
    # A line may end right after the epoch (a first claim has no cursor yet).
    logs = (first.log() + second.log()).replace("\n", " \n")
    epoch = kwargs["epoch"]
    # Exactly one claim of the message's epoch; the other copy found the run taken.
    assert len(log_lines(logs, f"event=running version={SLOW} epoch={epoch + 1} ")) == 1
    refused = [
        line
        for event in ("duplicate", "stale_message")
        for line in log_lines(logs, f"event={event} version={SLOW} epoch={epoch}")
    ]
    assert len(refused) == 1, logs
    assert first.alive and second.alive
    exactly_once(postgres_engine)
    ledger("duplicate delivery", 1, ROWS, postgres_engine)
