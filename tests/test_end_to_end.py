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
from tests.users import create_users, user_summary

pytestmark = pytest.mark.e2e


def statuses(settings: Settings) -> dict[str, str]:
    """Each version's status, read through `status --json` as a script would."""
    result = run_cli(settings, "status", "--json")
    assert result.returncode == 0, result.stderr
    return {row["version"]: row["status"] for row in json.loads(result.stdout)}


def test_a_backfill_over_many_chunks_applies_every_row_once(
    pg_settings: Settings, postgres_engine: Engine, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    # A zero budget still runs one batch per chunk: the chunk count is exact, whatever the speed.
    settings = pg_settings.with_(chunk_seconds=0.0)
    copy_tasks(settings.tasks_dir, "20250101000000_count_items.py")
    create_items(postgres_engine, 50_000)

    hook = run_hook(settings)
    assert hook.returncode == 0, hook.stderr
    assert "enqueued 20250101000000 count_items" in hook.stdout

    workers.append(WorkerProcess(settings, tmp_path, concurrency=2).wait_ready())
    wait_for(lambda: statuses(settings) == {"20250101000000": "succeeded"}, timeout=120)

    assert applied_counts(postgres_engine) == {1: 50_000}
    chunks = workers[0].log().count("event=running version=20250101000000")
    assert chunks == 50_000 // 500 + 1
    again = run_hook(settings)
    assert again.returncode == 0 and "nothing new to enqueue" in again.stdout


def test_a_chain_of_three_tasks_runs_to_success_after_one_deploy_hook(
    pg_settings: Settings, postgres_engine: Engine, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    settings = pg_settings.with_(chunk_seconds=0.2)
    copy_tasks(
        settings.tasks_dir,
        "20250301000000_seed_plans.py",
        "20250302000000_normalize_user_emails.py",
        "20250303000000_assign_email_domains.py",
    )
    create_users(postgres_engine, 10_000)
    workers.append(WorkerProcess(settings, tmp_path, concurrency=2).wait_ready())

    hook = run_hook(settings)

    assert hook.returncode == 0, hook.stderr
    assert "enqueued 20250301000000 seed_plans" in hook.stdout
    assert "waiting  20250303000000 on 20250301000000, 20250302000000" in hook.stdout
    done = {v: "succeeded" for v in ("20250301000000", "20250302000000", "20250303000000")}
    wait_for(lambda: statuses(settings) == done, timeout=120)
    # The row iteration reads what the backfill wrote: had it run early, it would have failed.
    assert user_summary(postgres_engine) == {
        "plans": ["business", "free", "team"],
        "missing_domain": 0,
        "wrong": 0,
        "runs": {1: 10_000},
    }
    assert "nothing new to enqueue" in run_hook(settings).stdout


def test_the_hook_returns_while_a_long_backfill_is_still_running(
    pg_settings: Settings, postgres_engine: Engine, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    settings = pg_settings.with_(chunk_seconds=1.0)
    copy_tasks(settings.tasks_dir, "20250110000000_slow_count_items.py")
    rows = 10_000  # a hundred batches of at least 50 ms each
    create_items(postgres_engine, rows)
    workers.append(WorkerProcess(settings, tmp_path).wait_ready())

    hook = run_hook(settings)

    assert hook.returncode == 0, hook.stderr
    assert "enqueued 20250110000000 slow_count_items" in hook.stdout
    # The hook has exited; the backfill goes on without it.
    wait_for(lambda: statuses(settings) == {"20250110000000": "running"}, timeout=60)
    assert applied_counts(postgres_engine).get(0, 0) > 0
    wait_for(lambda: statuses(settings) == {"20250110000000": "succeeded"}, timeout=120)
    assert applied_counts(postgres_engine) == {1: rows}
