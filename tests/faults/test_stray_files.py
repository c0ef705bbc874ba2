"""A stray or broken file in the task folder affects only itself.

A worker runs a valid task while `helpers.py` and a broken task file sit next to it; the
deploy hook still refuses the folder, with one line and exit 2.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from data_tasks.settings import Settings
from deploy_hooks.exit_codes import INVALID_TASKS, OK
from tests.conftest import copy_tasks
from tests.faults.harness import record, wait_status
from tests.faults.ledger import FaultCase
from tests.items import applied_counts, create_items
from tests.processes import WorkerProcess, run_hook

pytestmark = pytest.mark.e2e

VERSION = "20250101000000"
ROWS = 5_000


def add_stray_files(tasks_dir: Path) -> None:
    """What a developer leaves behind: a helper module and a task file that does not import."""
    (tasks_dir / "helpers.py").write_text("def shared() -> int:\n    return 1\n")
    (tasks_dir / "20990101000000_broken.py").write_text("import not_a_module_anywhere\n")


def test_a_worker_runs_a_valid_task_next_to_stray_and_broken_files(
    pg_settings: Settings,
    postgres_engine: Engine,
    workers: list[WorkerProcess],
    tmp_path: Path,
    faults: FaultCase,
) -> None:
    faults.describe("A helper module and a task file that does not import, next to a queued task")
    settings = pg_settings.with_(chunk_seconds=0.2)
    copy_tasks(settings.tasks_dir, "20250101000000_count_items.py")
    create_items(postgres_engine, ROWS)
    assert run_hook(settings).returncode == OK
    # The files arrive with the next release, while the task is still queued.
    add_stray_files(settings.tasks_dir)

    workers.append(WorkerProcess(settings, tmp_path).wait_ready())
    wait_status(postgres_engine, VERSION, "succeeded", "failed", timeout=60)

    assert record(postgres_engine, VERSION)["status"] == "succeeded"
    assert applied_counts(postgres_engine) == {1: ROWS}
    log = workers[0].log()
    assert log.count("ignoring") == 1 and "helpers.py" in log


def test_the_hook_refuses_a_folder_with_a_stray_or_broken_file(pg_settings: Settings) -> None:
    copy_tasks(pg_settings.tasks_dir, "20250101000000_count_items.py")
    (pg_settings.tasks_dir / "helpers.py").write_text("X = 1\n")
    result = run_hook(pg_settings)
    assert result.returncode == INVALID_TASKS
    assert result.stderr.strip().splitlines() == [
        f"error: invalid task file {pg_settings.tasks_dir / 'helpers.py'}: "
        "name must be <14-digit UTC timestamp>_<snake_case_name>.py"
    ]

    (pg_settings.tasks_dir / "helpers.py").unlink()
    (pg_settings.tasks_dir / "20990101000000_broken.py").write_text("import not_a_module\n")
    result = run_hook(pg_settings)
    assert result.returncode == INVALID_TASKS
    [line] = result.stderr.strip().splitlines()
    assert "20990101000000_broken.py" in line and "ModuleNotFoundError" in line
