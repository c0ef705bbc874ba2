"""SIGKILL the worker at random points of a backfill; the next hook or the sweep reclaims it."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
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
    record,
    wait_epoch,
    wait_progress,
    wait_reclaimable,
    wait_status,
)
from tests.faults.ledger import FaultCase
from tests.processes import WorkerProcess

pytestmark = pytest.mark.e2e

KILLS = 5


def test_sigkill_at_random_points_then_every_row_is_counted_once(
    pg_settings: Settings,
    postgres_engine: Engine,
    workers: list[WorkerProcess],
    tmp_path: Path,
    faults: FaultCase,
    shape: str,
) -> None:
    faults.describe(
        f"SIGKILL of the worker (all its processes) at a random point of a {shape}; the next "
        "run is reclaimed by the deploy hook and by the celery beat sweep, in turns"
    )
    settings = fault_settings(pg_settings)
    backfill(settings, postgres_engine)
    seed = int(os.environ.get("FAULT_SEED", random.randrange(1_000_000)))
    print(f"FAULT_SEED={seed}")
    rng = random.Random(seed)
    assert f"enqueued {SLOW}" in hook_ok(settings)

    reclaimed = {"hook": 0, "sweep": 0}
    killed_running = 0
    killed_status = "enqueued"  # the hook's job waits in the queue for the first worker
    for round_ in range(KILLS + 1):
        # A run killed mid-chunk is left "running", with a stale heartbeat and an expired
        # lease; the deploy hook and the beat sweep take turns reclaiming it. (A kill between
        # two chunks leaves the successor job queued, or unmarked for the sweep to publish.)
        stale = killed_status == "running"
        by_sweep = not stale or reclaimed["hook"] > reclaimed["sweep"]
        epoch = record(postgres_engine, SLOW)["epoch"]
        if stale:
            wait_reclaimable(settings, postgres_engine, SLOW)
            if not by_sweep:
                out = hook_ok(settings)
                assert f"enqueued {SLOW}" in out and "reclaimed" in out, out
                # The lane waits for its new job, which starts it at the next epoch.
                assert record(postgres_engine, SLOW)["lane_status"] == "enqueued"
                reclaimed["hook"] += 1
        beat = ["-B", "-s", str(tmp_path / f"beat{round_}")] if by_sweep else []
        worker = WorkerProcess(
            settings, tmp_path, extra_args=beat, extra_env={"DATA_TASKS_SWEEP_SECONDS": "1"}
        )
        workers.append(worker)
        worker.wait_ready()
        if stale and by_sweep:
            wait_epoch(postgres_engine, SLOW, above=epoch)
            assert log_lines(worker.log(), f"sweep enqueued {SLOW}", "reclaimed")
            reclaimed["sweep"] += 1
        if round_ == KILLS:
            break
        done = record(postgres_engine, SLOW)["processed"]
        wait_progress(postgres_engine, SLOW, done + rng.randrange(2_000, 12_000))
        faults.inject("SIGKILL", SLOW)
        worker.kill()
        killed_status = str(record(postgres_engine, SLOW)["lane_status"])
        killed_running += killed_status == "running"

    wait_status(postgres_engine, SLOW, "succeeded", timeout=120)
    final = record(postgres_engine, SLOW)
    assert final["processed"] == ROWS and final["attempts"] == 0
    # Every run killed mid-chunk was reclaimed, by both means.
    assert reclaimed["hook"] + reclaimed["sweep"] == killed_running
    assert reclaimed["hook"] >= 1 and reclaimed["sweep"] >= 1, reclaimed
    exactly_once(postgres_engine)
