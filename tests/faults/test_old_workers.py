"""A worker of an older release lacks the task file: it passes the job on until one has it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from data_tasks.settings import Settings
from tests.faults.harness import (
    SLOW,
    backfill,
    exactly_once,
    fault_settings,
    hook_ok,
    log_lines,
    record,
    untouched,
    wait_status,
)
from tests.faults.ledger import FaultCase
from tests.processes import WorkerProcess, wait_for

pytestmark = pytest.mark.e2e

PASSES = 3


def test_an_old_worker_passes_the_job_on_until_a_new_one_runs_it(
    pg_settings: Settings,
    postgres_engine: Engine,
    workers: list[WorkerProcess],
    tmp_path: Path,
    faults: FaultCase,
) -> None:
    faults.describe(
        "A worker without the task file (an older release) passes the job on until a new "
        "worker runs it"
    )
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

    def passes() -> list[str]:
        found = log_lines(old.log(), "event=unknown_version", f"version={SLOW}")
        return found if len(found) >= PASSES else []

    for _ in wait_for(passes):
        faults.inject("job taken by a worker without the file", SLOW)
    assert record(postgres_engine, SLOW)["status"] == "enqueued"
    untouched(postgres_engine)

    workers.append(WorkerProcess(settings, tmp_path).wait_ready())
    wait_status(postgres_engine, SLOW, "succeeded", timeout=120)
    assert old.alive
    exactly_once(postgres_engine)


def test_a_version_no_worker_has_fails_with_a_clear_error_after_the_limit(
    pg_settings: Settings,
    postgres_engine: Engine,
    workers: list[WorkerProcess],
    tmp_path: Path,
    faults: FaultCase,
) -> None:
    faults.describe(
        "No worker has the task file: `failed` after the pass-on limit, with a clear error",
        expected=0,
    )
    settings = fault_settings(pg_settings).with_(
        unknown_version_retries=2, unknown_version_countdown=0.2
    )
    backfill(settings, postgres_engine)
    old_release = tmp_path / "old_release_tasks"
    old_release.mkdir()
    old = WorkerProcess(settings.with_(tasks_dir=old_release), tmp_path)
    workers.append(old.wait_ready())
    hook_ok(settings)
    wait_status(postgres_engine, SLOW, "failed")
    for _ in log_lines(old.log(), "event=unknown_version", f"version={SLOW}"):
        faults.inject("job taken by a worker without the file", SLOW)
    assert record(postgres_engine, SLOW)["last_error"] == (
        f"no worker had the file of version {SLOW} after 2 tries"
    )
    untouched(postgres_engine)
