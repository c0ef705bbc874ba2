"""A batch that always fails at the same cursor: bounded retries with backoff, then `failed`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, inspect, text

from data_tasks.settings import Settings
from tests.conftest import copy_tasks
from tests.faults.harness import (
    DEPENDENT,
    DEPENDENT_FILE,
    MIDWAY,
    MIDWAY_FILE,
    ROWS,
    exactly_once,
    fault_settings,
    hook_ok,
    log_lines,
    queued_messages,
    record,
    wait_status,
)
from tests.faults.ledger import FaultCase
from tests.items import applied_counts, create_items
from tests.processes import WorkerProcess

pytestmark = pytest.mark.e2e


def dependent_runs(engine: Engine) -> int:
    """How often the dependent task ran."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("faulty_dependent_runs"):
            return 0
        return int(
            connection.execute(text("SELECT count(*) FROM faulty_dependent_runs")).scalar_one()
        )


def test_a_failing_task_fails_after_bounded_retries_then_resumes_when_fixed(
    pg_settings: Settings,
    postgres_engine: Engine,
    redis_client: redis.Redis,
    workers: list[WorkerProcess],
    tmp_path: Path,
    faults: FaultCase,
) -> None:
    faults.describe(
        "A batch that fails at the same cursor every time: 5 attempts, then `failed`, then "
        "resumed at its cursor once the file is fixed"
    )
    settings = fault_settings(pg_settings)
    create_items(postgres_engine, ROWS)
    copy_tasks(settings.tasks_dir, MIDWAY_FILE, DEPENDENT_FILE)
    out = hook_ok(settings)
    assert f"enqueued {MIDWAY}" in out and f"waiting  {DEPENDENT} on {MIDWAY}" in out
    worker = WorkerProcess(settings, tmp_path)
    workers.append(worker)
    worker.wait_ready()

    wait_status(postgres_engine, MIDWAY, "failed")
    failed = record(postgres_engine, MIDWAY)
    assert failed["attempts"] == settings.max_attempts
    assert failed["last_error"] == "RuntimeError: faulty batch 50001..51000"
    assert "Traceback" in failed["traceback"] and "faulty_fails_midway" in failed["traceback"]
    # The cursor stays after the last batch that committed.
    assert (failed["cursor"], failed["processed"]) == ("50000", 50_000)
    log = worker.log()
    attempts = [
        int(line.split("attempt=")[1].split()[0])
        for line in log_lines(log, "event=batch_failed", f"version={MIDWAY}")
    ]
    assert attempts == list(range(1, settings.max_attempts + 1))
    # The task file raises inside the worker: each attempt the log shows is one fault, at the
    # progress the record still holds (the cursor does not move between attempts).
    for attempt in attempts:
        faults.inject(f"batch raising (attempt {attempt})", MIDWAY)
    # Retried with a growing backoff, capped.
    countdowns = [
        ast.literal_eval(line.split("succeeded in ")[1].split(": ", 1)[1])["countdown"]
        for line in log_lines(log, "'outcome': 'retrying'")
    ]
    assert countdowns == [0.2, 0.4, 0.8, 1.0]
    # No endless loop: nothing is queued for it, the hook leaves it failed, and the
    # dependent task never started.
    assert queued_messages(redis_client) == []
    again = hook_ok(settings)
    assert f"failed   {MIDWAY}" in again and "nothing new to enqueue" in again
    assert record(postgres_engine, DEPENDENT)["status"] == "pending"
    assert dependent_runs(postgres_engine) == 0
    assert applied_counts(postgres_engine) == {1: 50_000, 0: 50_000}

    path = settings.tasks_dir / MIDWAY_FILE
    path.write_text(path.read_text().replace("BROKEN = True", "BROKEN = False"))
    assert f"enqueued {MIDWAY} faulty_fails_midway (epoch" in hook_ok(settings)
    wait_status(postgres_engine, DEPENDENT, "succeeded", timeout=120)
    assert record(postgres_engine, MIDWAY)["status"] == "succeeded"
    assert dependent_runs(postgres_engine) == 1
    # Resumed at its cursor: the first half was not counted again.
    exactly_once(postgres_engine)
