"""`python -m deploy_hooks.enqueue` as a deploy runs it: output, exit codes, one-line errors."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from subprocess import CompletedProcess

import redis

from data_tasks.settings import Settings
from deploy_hooks.exit_codes import DATABASE_UNREACHABLE, INVALID_TASKS, OK, REDIS_UNREACHABLE
from tests.conftest import copy_tasks
from tests.processes import run_hook


def one_error_line(result: CompletedProcess[str]) -> str:
    """The hook's stderr, which must be exactly one line."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_the_hook_prints_what_it_enqueued_and_exits_zero(
    pg_settings: Settings, redis_client: redis.Redis
) -> None:
    copy_tasks(
        pg_settings.tasks_dir,
        "20250101000000_count_items.py",
        "20250109000000_count_items_after_the_rest.py",
    )

    started = time.monotonic()
    result = run_hook(pg_settings)
    wall = time.monotonic() - started
    again = run_hook(pg_settings)

    assert result.returncode == OK, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "enqueued 20250101000000 count_items (epoch 1, new)"
    assert lines[1] == "waiting  20250109000000 on 20250101000000"
    assert lines[-1].startswith("deploy hook done in ")
    assert redis_client.llen(pg_settings.queue) == 1  # one chunk job on the broker
    assert again.returncode == OK
    assert "running  20250101000000 (already in flight)" in again.stdout
    assert "nothing new to enqueue" in again.stdout
    assert redis_client.llen(pg_settings.queue) == 1
    print(f"\ndeploy hook: {wall:.2f}s wall (process start included), {lines[-1]}")


def test_an_unreachable_database_is_exit_3_and_one_line_without_the_password(
    pg_settings: Settings,
) -> None:
    copy_tasks(pg_settings.tasks_dir, "20250101000000_count_items.py")

    result = run_hook(pg_settings, DATABASE_URL="postgresql://postgres:hunter2@127.0.0.1:1/x")

    assert result.returncode == DATABASE_UNREACHABLE
    line = one_error_line(result)
    assert line.startswith("error: database unreachable at postgresql+psycopg://postgres:***@")
    assert "hunter2" not in result.stderr + result.stdout


def test_an_unreachable_redis_is_exit_4_and_one_line_without_the_password(
    pg_settings: Settings,
) -> None:
    copy_tasks(pg_settings.tasks_dir, "20250101000000_count_items.py")

    result = run_hook(pg_settings, REDIS_URL="redis://:hunter2@127.0.0.1:1/0")

    assert result.returncode == REDIS_UNREACHABLE
    line = one_error_line(result)
    assert line.startswith("error: Redis unreachable at redis://:***@127.0.0.1:1/0")
    assert "hunter2" not in result.stderr + result.stdout


def test_an_invalid_task_file_is_exit_2_and_one_line_naming_it(
    pg_settings: Settings, redis_client: redis.Redis
) -> None:
    copy_tasks(
        pg_settings.tasks_dir,
        "20250101000000_count_items.py",
        "20240101000000_raises_at_import.py",
    )

    result = run_hook(pg_settings)

    assert result.returncode == INVALID_TASKS
    line = one_error_line(result)
    broken = Path(pg_settings.tasks_dir) / "20240101000000_raises_at_import.py"
    assert line.startswith(f"error: invalid task file {broken}: raised KeyError at import")
    assert redis_client.llen(pg_settings.queue) == 0  # nothing enqueued by a broken deploy


def test_a_bad_file_name_is_exit_2(pg_settings: Settings) -> None:
    (pg_settings.tasks_dir / "backfill_users.py").write_text('"""Forgot the version."""\n')

    result = run_hook(pg_settings)

    assert result.returncode == INVALID_TASKS
    assert "backfill_users.py" in one_error_line(result)


def test_hooks_started_at_once_publish_each_task_once(
    pg_settings: Settings, redis_client: redis.Redis
) -> None:
    copy_tasks(
        pg_settings.tasks_dir,
        "20250101000000_count_items.py",
        "20250102000000_count_even_items.py",
        "20250103000000_count_item_rows.py",
    )
    results: list[CompletedProcess[str]] = []

    def deploy() -> None:
        results.append(run_hook(pg_settings))

    threads = [threading.Thread(target=deploy) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [r.returncode for r in results] == [OK] * 4, [r.stderr for r in results]
    enqueued = [
        line for r in results for line in r.stdout.splitlines() if line.startswith("enqueued")
    ]
    assert sorted(line.split()[1] for line in enqueued) == [
        "20250101000000",
        "20250102000000",
        "20250103000000",
    ]
    assert redis_client.llen(pg_settings.queue) == 3
