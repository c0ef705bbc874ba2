"""A worker of an older release lacks the task file: it passes the job on until one has it."""

from __future__ import annotations

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
    ledger,
    log_lines,
    record,
    untouched,
    wait_status,
)
from tests.processes import WorkerProcess, wait_for

pytestmark = pytest.mark.e2e

PASSES = 3


def test_an_old_worker_passes_the_job_on_until_a_new_one_runs_it(
    pg_settings: Settings, postgres_engine: Engine, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    settings = fault_settings(pg_settings).with_(
        unknown_version_retries=1000, unknown_version_countdown=0.3
    )
    backfill(settings, postgres_engine)
    old_release = tmp_path / "old_release_tasks"
    old_release.mkdir()
    old = WorkerProcess(settings.with_(tasks_dir=old_release), tmp_path)
    workers.append(old)
    old.wait_ready()
    hook_ok(settings)

    wait_for(
        lambda: len(log_lines(old.log(), "event=unknown_version", f"version={SLOW}")) >= PASSES
    )
    assert record(postgres_engine, SLOW)["status"] == "enqueued"
    untouched(postgres_engine)

    workers.append(WorkerProcess(settings, tmp_path).wait_ready())
    wait_status(postgres_engine, SLOW, "succeeded", timeout=120)
    assert old.alive
    exactly_once(postgres_engine)
    ledger("old worker without the task file", PASSES, ROWS, postgres_engine)


def test_a_version_no_worker_has_fails_with_a_clear_error_after_the_limit(
    pg_settings: Settings, postgres_engine: Engine, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    settings = fault_settings(pg_settings).with_(
        unknown_version_retries=2, unknown_version_countdown=0.2
    )
    backfill(settings, postgres_engine)
    old_release = tmp_path / "old_release_tasks"
    old_release.mkdir()
    workers.append(WorkerProcess(settings.with_(tasks_dir=old_release), tmp_path).wait_ready())
    hook_ok(settings)
    wait_status(postgres_engine, SLOW, "failed")
    assert record(postgres_engine, SLOW)["last_error"] == (
        f"no worker had the file of version {SLOW} after 2 tries"
    )
    untouched(postgres_engine)
    ledger("no worker has the task file", 2, ROWS, postgres_engine, expected=0)
