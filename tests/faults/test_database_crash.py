"""PostgreSQL itself crashes mid-backfill: its last batches may be undone, and are run again.

A server process killed with SIGKILL makes the postmaster end every session and recover from
the write-ahead log on disk, as after a power cut (unlike pg_terminate_backend, which the
outage test uses). Batches commit without waiting for the disk (batch_synchronous_commit
"off"), so the newest commits may be lost even after other sessions saw them: each with its
cursor move, so the runner must apply them again, once. This crashes the whole server, so
nothing else may use it meanwhile (the test suite runs one test at a time).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from data_tasks.settings import Settings
from tests.faults.harness import (
    ROWS,
    SLOW,
    backfill_running,
    exactly_once,
    fault_settings,
    record,
    wait_progress,
    wait_status,
)
from tests.faults.ledger import FaultCase
from tests.processes import WorkerProcess, wait_for

pytestmark = pytest.mark.e2e

CRASHES = 3
CASE = (
    "PostgreSQL crashes mid-batch of a {shape} (SIGKILL of a server process: every session "
    "ends, the server recovers from its log; the newest batch commits may be undone)"
)


def crash(engine: Engine) -> None:
    """SIGKILL a server process (this session's own, from a program the server runs)."""
    try:
        with engine.connect() as connection:
            # The program's parent is the session's server process.
            connection.execute(text("COPY (SELECT 1) TO PROGRAM 'kill -9 $PPID'"))
    except DBAPIError:
        pass  # the connection went down with the process, as it should
    else:
        raise AssertionError("the server process outlived its SIGKILL")


def recovered(engine: Engine) -> bool:
    """True once the server accepts sessions again after its crash recovery."""
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT NOT pg_is_in_recovery()")).scalar_one() is True
    except DBAPIError:
        return False


def test_a_crash_of_the_database_server_loses_and_repeats_nothing(
    pg_settings: Settings,
    postgres_engine: Engine,
    workers: list[WorkerProcess],
    tmp_path: Path,
    faults: FaultCase,
    shape: str,
) -> None:
    case = CASE.format(shape=shape)
    faults.describe(case)
    settings = fault_settings(pg_settings)
    backfill_running(settings, postgres_engine, workers, tmp_path)
    rng = random.Random()
    undone = []
    for _ in range(CRASHES):
        # No sweep: the worker records the failed batch once the server is back, and retries.
        wait_progress(
            postgres_engine,
            SLOW,
            record(postgres_engine, SLOW)["processed"] + rng.randrange(3_000, 12_000),
        )
        seen = record(postgres_engine, SLOW)["processed"]
        assert faults.inject("PostgreSQL crash", SLOW)
        crash(postgres_engine)
        wait_for(lambda: recovered(postgres_engine), timeout=60, interval=0.2)
        # Rows whose batch another session had seen committed, then undone by the crash.
        undone.append(seen - record(postgres_engine, SLOW)["processed"])
    faults.describe(
        f"{case}: {sum(undone):,} rows whose batches other sessions had seen committed were "
        "undone by the crashes"
    )
    wait_status(postgres_engine, SLOW, "succeeded")
    assert record(postgres_engine, SLOW)["processed"] == ROWS
    exactly_once(postgres_engine)
