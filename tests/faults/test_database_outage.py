"""The worker's PostgreSQL connections killed mid-batch: the batch rolls back and is retried."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from sqlalchemy import Engine

from data_tasks.settings import Settings
from tests.faults.harness import (
    ROWS,
    SLOW,
    backfill_running,
    exactly_once,
    fault_settings,
    log_lines,
    record,
    sweep_until,
    terminate_backends,
    wait_progress,
)
from tests.faults.ledger import FaultCase
from tests.processes import WorkerProcess

pytestmark = pytest.mark.e2e

TERMINATIONS = 5


def test_connections_terminated_mid_batch_lose_and_repeat_nothing(
    pg_settings: Settings,
    postgres_engine: Engine,
    workers: list[WorkerProcess],
    tmp_path: Path,
    faults: FaultCase,
    shape: str,
) -> None:
    faults.describe(
        f"The worker's PostgreSQL connections terminated mid-batch of a {shape} "
        "(`pg_terminate_backend`)"
    )
    settings = fault_settings(pg_settings)
    worker = backfill_running(settings, postgres_engine, workers, tmp_path)
    rng = random.Random()
    for _ in range(TERMINATIONS):
        wait_progress(
            postgres_engine,
            SLOW,
            record(postgres_engine, SLOW)["processed"] + rng.randrange(3_000, 12_000),
        )
        faults.inject("pg_terminate_backend", SLOW)
        assert terminate_backends(postgres_engine) >= 1
    sweep_until(settings, postgres_engine, SLOW)
    # The runner saw the dropped connections and retried the batch itself.
    assert log_lines(worker.log(), "event=batch_failed", "OperationalError")
    assert record(postgres_engine, SLOW)["processed"] == ROWS
    exactly_once(postgres_engine)
