"""A record row held by a long batch, and a task_records table the hook cannot use.

The operator commands and the deploy hook fail with one line within their bounds (lock
4 s, statement 6 s) instead of hanging, and a database error is exit 3, not a traceback.
"""

from __future__ import annotations

import os
import time

import pytest
from sqlalchemy import Engine, text

from data_tasks.settings import Settings
from deploy_hooks.exit_codes import DATABASE_UNREACHABLE, OK
from tests.conftest import copy_tasks
from tests.faults.harness import record, within_bound
from tests.processes import run_cli, run_hook

pytestmark = pytest.mark.e2e

TASK_FILE = "20250101000000_count_items.py"
VERSION = "20250101000000"


def test_pause_while_a_batch_holds_the_record_fails_within_its_bound(
    pg_settings: Settings, postgres_engine: Engine
) -> None:
    copy_tasks(pg_settings.tasks_dir, TASK_FILE)
    assert run_hook(pg_settings).returncode == OK
    bound = within_bound("deploy_hooks")
    with postgres_engine.connect() as batch:
        # What a long batch does: it holds its task's record until it commits.
        batch.execute(
            text("SELECT * FROM task_records WHERE version = :v FOR UPDATE"), {"v": VERSION}
        )
        started = time.monotonic()
        result = run_cli(pg_settings, "pause", VERSION)
        took = time.monotonic() - started
        batch.rollback()
    assert result.returncode == DATABASE_UNREACHABLE, result.stdout + result.stderr
    assert took < bound, f"pause took {took:.1f}s (bound {bound:.1f}s)"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "lock timeout" in lines[0] and "try again" in lines[0]
    assert record(postgres_engine, VERSION)["status"] == "enqueued"
    # Once the batch commits, the same command goes through.
    assert run_cli(pg_settings, "pause", VERSION).returncode == OK


def test_hook_with_a_task_records_table_of_another_shape_exits_3_with_one_line(
    pg_settings: Settings, postgres_engine: Engine
) -> None:
    copy_tasks(pg_settings.tasks_dir, TASK_FILE)
    with postgres_engine.begin() as connection:
        connection.execute(text("CREATE TABLE task_records (id integer PRIMARY KEY)"))
    result = run_hook(pg_settings)
    assert result.returncode == DATABASE_UNREACHABLE, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: database error at ")
    assert "does not exist" in lines[0]


def test_hook_without_permission_on_task_records_exits_3_with_one_line(
    pg_settings: Settings, postgres_engine: Engine
) -> None:
    copy_tasks(pg_settings.tasks_dir, TASK_FILE)
    assert run_hook(pg_settings).returncode == OK
    role = f"data_tasks_reader_{os.getpid()}"
    with postgres_engine.begin() as connection:
        connection.execute(text(f"CREATE ROLE {role} LOGIN"))
        connection.execute(text(f"GRANT USAGE ON SCHEMA public TO {role}"))
        connection.execute(text(f"GRANT SELECT ON task_records TO {role}"))
    try:
        # A new task to record: the hook has to INSERT, which the role may not.
        copy_tasks(pg_settings.tasks_dir, "20250102000000_count_even_items.py")
        url = postgres_engine.url.set(username=role).render_as_string(hide_password=False)
        result = run_hook(pg_settings.with_(database_url=url))
    finally:
        with postgres_engine.begin() as connection:
            connection.execute(text(f"DROP OWNED BY {role}"))
            connection.execute(text(f"DROP ROLE {role}"))
    assert result.returncode == DATABASE_UNREACHABLE, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "permission denied" in lines[0]
