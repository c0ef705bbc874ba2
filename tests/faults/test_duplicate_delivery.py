"""The same chunk message delivered twice to two workers: one runs it, the other stops cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine

from data_tasks.publisher import JOB_NAME
from data_tasks.settings import Settings
from tests.faults.harness import (
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
from worker.app import make_app

pytestmark = pytest.mark.e2e


def test_a_message_delivered_twice_runs_once(
    pg_settings: Settings,
    postgres_engine: Engine,
    redis_client: redis.Redis,
    workers: list[WorkerProcess],
    tmp_path: Path,
    faults: FaultCase,
) -> None:
    faults.describe("The same chunk message delivered twice, with two workers")
    settings = fault_settings(pg_settings)
    backfill(settings, postgres_engine)
    first = WorkerProcess(settings, tmp_path)
    second = WorkerProcess(settings, tmp_path)
    workers += [first, second]
    first.wait_ready()
    second.wait_ready()

    hook_ok(settings)
    app = make_app(settings)
    # The very message the hook published, once more, while its chunk runs (as a broker
    # redelivers a message whose ack it has not seen): it was published at epoch 0.
    epoch = 0
    wait_progress(postgres_engine, SLOW, 0)
    faults.inject("the hook's message again", SLOW)
    kwargs = {"version": SLOW, "epoch": epoch, "unknown_retries": 0, "lane": 0}
    app.send_task(JOB_NAME, kwargs=kwargs, queue=settings.queue)

    wait_status(postgres_engine, SLOW, "succeeded", timeout=120)
    logs = first.log() + second.log()
    # Exactly one claim of the message's epoch; the other copy found the run taken.
    started = log_lines(logs, f"event=running version={SLOW} lane=0 epoch={epoch + 1}")
    assert len([line for line in started if line.split()[-1] == f"epoch={epoch + 1}"]) == 1
    refused = [
        line
        for event in ("duplicate", "stale_message")
        for line in log_lines(logs, f"event={event} version={SLOW} lane=0 epoch={epoch}")
    ]
    assert len(refused) == 1, logs
    assert first.alive and second.alive
    exactly_once(postgres_engine)
