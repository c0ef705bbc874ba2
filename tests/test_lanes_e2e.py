"""Lanes with real workers: hand-offs never lost, a dead lane reclaimed while the rest run,
a batch of any length never reclaimed while its worker lives."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from data_tasks.publisher import CeleryPublisher
from data_tasks.runtime import Runtime
from data_tasks.scheduler import enqueue
from data_tasks.settings import Settings
from tests.conftest import copy_tasks
from tests.faults.harness import log_lines
from tests.items import applied_counts, create_items
from tests.processes import WorkerProcess, run_cli, run_hook, wait_for
from worker.app import make_app

pytestmark = pytest.mark.e2e

HAND_OFF = "20250604000000"
LONG = "20250605000000"


def record_status(engine: Engine, version: str) -> str | None:
    """A task's status, read from its record."""
    with engine.connect() as connection:
        return connection.execute(
            text("SELECT status FROM task_records WHERE version = :v"), {"v": version}
        ).scalar()


def lane_rows(engine: Engine, version: str) -> list[dict[str, object]]:
    """Every lane of a version, in order."""
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT * FROM task_lanes WHERE version = :v ORDER BY lane"), {"v": version}
        ).mappings()
        return [dict(row) for row in rows]


@contextmanager
def sweeper(settings: Settings) -> Iterator[Runtime]:
    """The sweep's pass in this process, publishing through a real Celery app (as beat's job)."""
    app = make_app(settings)
    runtime = Runtime.build(settings, CeleryPublisher(app, settings.queue))
    try:
        yield runtime
    finally:
        runtime.close()
        app.close()


def task_status(settings: Settings) -> str:
    """The first task's status, as `status --json` shows it."""
    result = run_cli(settings, "status", "--json")
    return str(json.loads(result.stdout)[0]["status"]) if result.returncode == 0 else ""


def test_hand_offs_between_four_lanes_on_eight_processes_are_never_lost(
    pg_settings: Settings, postgres_engine: Engine, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    settings = pg_settings.with_(chunk_seconds=0.2)
    copy_tasks(settings.tasks_dir, "20250604000000_lanes_hand_off.py")
    # Each batch of 10 rows sleeps 10 ms, so a 0.2 s chunk does at most 20 batches: at least
    # one hand-off per 200 rows, however fast the machine.
    rows = 64_000
    create_items(postgres_engine, rows)
    for _ in range(2):
        workers.append(WorkerProcess(settings, tmp_path, concurrency=4))
    for worker in workers:
        worker.wait_ready()

    assert run_hook(settings).returncode == 0
    # No sweep runs here: a successor dropped on the way would leave its lane frozen.
    wait_for(lambda: task_status(settings) == "succeeded", timeout=240, interval=0.5)

    assert applied_counts(postgres_engine) == {1: rows}
    logs = "\n".join(worker.log() for worker in workers)
    hand_offs = len(log_lines(logs, "event=chunk_done", f"version={HAND_OFF}"))
    refused = log_lines(logs, "event=stale_message") + log_lines(logs, "event=fenced")
    print(f"\n{hand_offs} hand-offs, {len(refused)} dropped or refused jobs")
    assert hand_offs >= 300
    assert refused == []
    assert [lane["status"] for lane in lane_rows(postgres_engine, HAND_OFF)] == ["succeeded"] * 4


def test_a_killed_lane_is_reclaimed_while_the_other_lanes_run(
    pg_settings: Settings, postgres_engine: Engine, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    settings = pg_settings.with_(chunk_seconds=0.2, stale_seconds=3.0, lock_seconds=2.0)
    copy_tasks(settings.tasks_dir, "20250604000000_lanes_hand_off.py")
    rows = 40_000
    create_items(postgres_engine, rows)
    doomed = WorkerProcess(settings, tmp_path, concurrency=1)
    survivor = WorkerProcess(settings, tmp_path, concurrency=4)
    workers.extend([doomed, survivor])
    for worker in workers:
        worker.wait_ready()
    assert run_hook(settings).returncode == 0

    # Kill the worker while it runs a lane (after that lane's first batches).
    def running_on_doomed() -> dict[str, object] | None:
        for lane in lane_rows(postgres_engine, HAND_OFF):
            if lane["status"] == "running" and lane["worker"] == doomed.name and lane["cursor"]:
                return lane
        return None

    lane = wait_for(running_on_doomed, timeout=60, interval=0.02)
    assert lane is not None
    doomed.kill()
    killed_at = time.monotonic()
    cursor = next(
        row["cursor"] for row in lane_rows(postgres_engine, HAND_OFF) if row["lane"] == lane["lane"]
    )

    # The sweep: the deploy hook's pass, every half second, as celery beat would run it.
    sweep_every = 0.5
    moved_after = None
    others_running_then = False
    with sweeper(settings) as sweep:
        while time.monotonic() - killed_at < 60:
            enqueue(sweep)
            lanes = lane_rows(postgres_engine, HAND_OFF)
            mine = next(row for row in lanes if row["lane"] == lane["lane"])
            if mine["cursor"] != cursor:
                moved_after = time.monotonic() - killed_at
                others_running_then = any(
                    row["status"] in ("running", "enqueued") and row["lane"] != lane["lane"]
                    for row in lanes
                )
                break
            time.sleep(sweep_every)
    print(f"\nlane {lane['lane']} moved again {moved_after:.2f}s after its worker was killed")
    assert moved_after is not None
    assert others_running_then, "the other lanes had finished: the reclaim was not measured"
    # Stale time, one sweep, then a free pool process takes the job and commits a batch.
    assert moved_after <= settings.stale_seconds + sweep_every + 2.0
    wait_for(lambda: task_status(settings) == "succeeded", timeout=240, interval=0.5)
    assert applied_counts(postgres_engine) == {1: rows}


def test_a_one_shot_three_times_longer_than_the_stale_time_runs_once(
    pg_settings: Settings, postgres_engine: Engine, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    settings = pg_settings.with_(stale_seconds=2.0, lock_seconds=1.0, chunk_seconds=60.0)
    copy_tasks(settings.tasks_dir, "20250605000000_long_one_shot.py")
    create_items(postgres_engine, 100)
    worker = WorkerProcess(settings, tmp_path, extra_env={"ONE_SHOT_SECONDS": "8"})
    workers.append(worker.wait_ready())
    assert run_hook(settings).returncode == 0

    started = time.monotonic()
    epochs = set()
    sweeps: list[float] = []
    hooked = False
    with sweeper(settings) as sweep:
        while record_status(postgres_engine, LONG) != "succeeded":
            if not hooked and time.monotonic() - started > 2 * settings.stale_seconds:
                # A real deploy hook, once the batch is older than the stale time.
                result = run_hook(settings)
                assert result.returncode == 0 and "reclaimed" not in result.stdout, result
                hooked = True
            # Sweeps (the deploy hook's pass) beside it: none may take a live batch for dead.
            report = enqueue(sweep)
            assert not [item for item in report.enqueued if "reclaimed" in item.reason]
            sweeps.append(time.monotonic() - started)
            epochs |= {lane["epoch"] for lane in lane_rows(postgres_engine, LONG)}
            assert time.monotonic() - started < 120, "the one-shot never finished"
            time.sleep(0.2)
    assert applied_counts(postgres_engine) == {1: 100}
    assert epochs == {1}
    # Sweeps ran once the batch was older than the stale time: it looked alive to them.
    assert any(at > 2 * settings.stale_seconds for at in sweeps), sweeps
    assert not log_lines(worker.log(), "event=fenced")
