"""The whole path with real processes: deploy hook, celery workers, records and data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine

from data_tasks.settings import Settings
from tests.conftest import copy_tasks
from tests.items import applied_counts, create_items
from tests.processes import WorkerProcess, run_cli, run_hook, wait_for

pytestmark = pytest.mark.e2e


def statuses(settings: Settings) -> dict[str, str]:
    """Each version's status, read through `status --json` as a script would."""
    result = run_cli(settings, "status", "--json")
    assert result.returncode == 0, result.stderr
    return {row["version"]: row["status"] for row in json.loads(result.stdout)}


def test_a_backfill_over_many_chunks_applies_every_row_once(
    pg_settings: Settings, postgres_engine: Engine, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    settings = pg_settings.with_(chunk_seconds=0.05)
    copy_tasks(settings.tasks_dir, "20250101000000_count_items.py")
    create_items(postgres_engine, 50_000)

    hook = run_hook(settings)
    assert hook.returncode == 0, hook.stderr
    assert "enqueued 20250101000000 count_items" in hook.stdout

    workers.append(WorkerProcess(settings, tmp_path, concurrency=2).wait_ready())
    wait_for(lambda: statuses(settings) == {"20250101000000": "succeeded"}, timeout=120)

    assert applied_counts(postgres_engine) == {1: 50_000}
    chunks = workers[0].log().count("event=running version=20250101000000")
    assert chunks > 5, f"expected many chunks, saw {chunks}"
    again = run_hook(settings)
    assert again.returncode == 0 and "nothing new to enqueue" in again.stdout
