"""Every command needs a database named on purpose: none is guessed, and nothing is created."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine

from data_tasks.settings import Settings
from deploy_hooks.exit_codes import FAILED, OK, USAGE
from tests.items import create_items
from tests.processes import REPO
from tests.services import REDIS_URL

BROKEN_FILE = "20250601000000_broken_sql.py"
BROKEN_TASK = '''"""A backfill whose SQL names a table that does not exist."""

from sqlalchemy import text
from sqlalchemy.orm import Session

from data_tasks import keyset_backfill


@keyset_backfill("items", key="id", batch_size=10)
def broken_sql(session: Session, first_id: int, last_id: int) -> None:
    session.execute(text("UPDATE no_such_table SET applied = 1 WHERE id = :id"), {"id": first_id})
'''


def bare_environment(**extra: str) -> dict[str, str]:
    """The environment of a shell that exported no DATABASE_URL and no data task setting."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key != "DATABASE_URL" and not key.startswith("DATA_TASKS_")
    }
    env.update(PYTHONPATH=str(REPO), REDIS_URL=REDIS_URL, **extra)
    return env


def run_in(folder: Path, *command: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """Run a command of this package from `folder`, as an operator would from the app's folder."""
    return subprocess.run(
        [sys.executable, *command],
        env=bare_environment(**extra),
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "deploy_hooks", "status"],
        ["-m", "deploy_hooks.enqueue"],
        ["-m", "celery", "-A", "worker", "worker", "--pool=solo", "--without-mingle"],
    ],
    ids=["status", "deploy hook", "worker"],
)
def test_without_a_database_every_command_refuses_in_one_line_and_creates_nothing(
    tmp_path: Path, command: list[str]
) -> None:
    result = run_in(tmp_path, *command)

    assert result.returncode == USAGE, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "DATABASE_URL" in errors[0], result.stderr
    if command[1] != "celery":
        assert result.stderr.strip() == errors[0]
    assert list(tmp_path.iterdir()) == [], "a command without a database created a file"


def test_a_dotenv_in_the_working_folder_names_the_database(
    tmp_path: Path, postgres_engine: Engine
) -> None:
    # The engine's fixture empties the session's database first: an earlier test's records
    # would otherwise be listed, and "no data tasks" would depend on the order tests run in.
    url = postgres_engine.url.render_as_string(hide_password=False)
    (tmp_path / ".env").write_text(f"DATABASE_URL={url}\n")

    result = run_in(tmp_path, "-m", "deploy_hooks", "status")

    assert result.returncode == OK, result.stderr
    assert "no data tasks" in result.stdout


def test_an_exported_variable_wins_over_the_dotenv_and_the_option_over_both(
    tmp_path: Path, postgres_url: str
) -> None:
    (tmp_path / ".env").write_text("DATABASE_URL=postgresql://nobody@127.0.0.1:1/missing\n")

    exported = run_in(tmp_path, "-m", "deploy_hooks", "status", DATABASE_URL=postgres_url)
    assert exported.returncode == OK, exported.stderr
    option = run_in(tmp_path, "-m", "deploy_hooks", "--database-url", postgres_url, "status")
    assert option.returncode == OK, option.stderr
    after = run_in(tmp_path, "-m", "deploy_hooks", "status", "--database-url", postgres_url)
    assert after.returncode == OK, after.stderr


def test_new_refuses_a_name_a_task_file_already_has(tmp_path: Path) -> None:
    first = run_in(tmp_path, "-m", "deploy_hooks", "new", "backfill_prices")
    assert first.returncode == OK, first.stderr
    second = run_in(tmp_path, "-m", "deploy_hooks", "new", "backfill_prices")

    assert second.returncode == USAGE
    assert second.stderr.count("\n") == 1 and "backfill_prices" in second.stderr
    assert "already exists" in second.stderr
    assert len(list((tmp_path / "tasks").glob("*.py"))) == 1
    # A name that only ends like it is another task.
    other = run_in(tmp_path, "-m", "deploy_hooks", "new", "prices")
    assert other.returncode == OK, other.stderr


def test_a_dry_run_whose_sql_fails_is_one_line_and_the_traceback_only_on_request(
    tmp_path: Path, pg_settings: Settings, postgres_engine: Engine
) -> None:
    create_items(postgres_engine, 20)
    (pg_settings.tasks_dir / BROKEN_FILE).write_text(BROKEN_TASK)
    env = {"DATABASE_URL": pg_settings.database_url, "DATA_TASKS_DIR": str(pg_settings.tasks_dir)}

    result = run_in(tmp_path, "-m", "deploy_hooks", "dry-run", "20250601000000", **env)

    assert result.returncode == FAILED
    assert result.stderr.count("\n") == 1, result.stderr
    assert "dry run of 20250601000000 failed" in result.stderr
    assert "no_such_table" in result.stderr
    verbose = run_in(
        tmp_path, "-m", "deploy_hooks", "dry-run", "20250601000000", "--traceback", **env
    )
    assert verbose.returncode == FAILED
    assert "Traceback (most recent call last)" in verbose.stderr
