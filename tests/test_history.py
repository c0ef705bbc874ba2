"""The history of each task as an operator reads it: every change, in order, with who made it."""

from __future__ import annotations

import getpass
import json
import socket
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from data_tasks.history import TaskHistory
from data_tasks.records import insert_missing, move
from data_tasks.runtime import Runtime
from data_tasks.settings import Settings
from data_tasks.status import Status
from deploy_hooks.cli import main
from deploy_hooks.exit_codes import FAILED, OK, USAGE
from tests.conftest import copy_tasks
from tests.items import create_items
from tests.processes import environment

POISONED = "20250301000100"
POISONED_FILE = "20250301000100_ops_poisoned_items.py"
RAISES = "20240101000000"
RAISES_FILE = "20240101000000_raises_at_import.py"
HOST = socket.gethostname()
ME = f"{getpass.getuser()}@{HOST}"


@pytest.fixture
def cli(pg_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The environment `main` reads its settings from, pointing at the test's services."""
    for key, value in environment(pg_settings).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("DATA_TASKS_ACTOR", raising=False)
    return pg_settings


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run one command; returns its exit code, stdout and stderr."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def history(capsys: pytest.CaptureFixture[str], *argv: str) -> list[tuple[Any, ...]]:
    """`history --json`, oldest first, as (from, to, epoch, event, actor) rows."""
    code, out, _ = run(capsys, "history", *argv, "--json")
    assert code == OK
    rows = json.loads(out)
    return [(r["from_status"], r["to_status"], r["epoch"], r["event"], r["actor"]) for r in rows][
        ::-1
    ]


def test_a_failure_a_retry_a_pause_a_resume_and_a_rerun_are_each_one_row_in_order(
    cli: Settings,
    postgres_engine: Engine,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    copy_tasks(cli.tasks_dir, POISONED_FILE)
    create_items(postgres_engine, 300)
    with postgres_engine.begin() as connection:
        connection.execute(text("UPDATE items SET label = 'poison' WHERE id = 250"))
    assert run(capsys, "run", POISONED, "--inline")[0] == FAILED
    with postgres_engine.begin() as connection:
        connection.execute(text("UPDATE items SET label = 'cured' WHERE id = 250"))

    assert run(capsys, "--actor", "alice", "retry", POISONED)[0] == OK
    assert run(capsys, "pause", POISONED, "--actor", "bob")[0] == OK
    monkeypatch.setenv("DATA_TASKS_ACTOR", "carol")
    assert run(capsys, "resume", POISONED)[0] == OK
    monkeypatch.delenv("DATA_TASKS_ACTOR")
    assert run(capsys, "run", POISONED, "--inline")[0] == OK
    assert run(capsys, "rerun", POISONED, "--yes", "--actor", "dave")[0] == OK

    assert history(capsys, POISONED) == [
        ("pending", "enqueued", 1, "run", ME),
        ("enqueued", "running", 1, "status", HOST),
        ("running", "failed", 1, "status", HOST),
        ("failed", "enqueued", 2, "retry", "alice"),
        ("enqueued", "paused", 2, "pause", "bob"),
        ("paused", "enqueued", 3, "resume", "carol"),
        ("enqueued", "enqueued", 4, "run", ME),
        ("enqueued", "running", 4, "status", HOST),
        ("running", "succeeded", 4, "status", HOST),
        ("succeeded", "enqueued", 5, "rerun", "dave"),
    ]
    code, out, _ = run(capsys, "history", "--json")
    failed = [row for row in json.loads(out) if row["to_status"] == "failed"]
    assert [row["error"] for row in failed] == ["RuntimeError: item 250 is poisoned"]

    code, out, _ = run(capsys, "history", "--limit", "2")
    assert code == OK
    lines = out.splitlines()
    assert len(lines) == 2
    assert "succeeded -> enqueued" in lines[0] and lines[0].endswith("rerun by dave")
    assert "running -> succeeded" in lines[1]

    code, out, _ = run(capsys, "show", POISONED)
    shown = out.split("history:\n")[1].splitlines()
    assert len(shown) == 10
    assert "pending -> enqueued" in shown[0] and "failed -> enqueued" in shown[3]
    assert "item 250 is poisoned" in shown[2]
    code, out, _ = run(capsys, "show", POISONED, "--json")
    assert len(json.loads(out)["history"]) == 10


def test_history_refuses_a_limit_below_one_and_an_unknown_version(
    cli: Settings, postgres_engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "history", "--limit", "0")
    assert (code, err) == (USAGE, "error: --limit must be at least 1, not 0\n")
    code, out, err = run(capsys, "history", "20991231000000")
    assert code != OK and len(err.splitlines()) == 1 and out == ""
    code, out, _ = run(capsys, "history")
    assert (code, out) == (OK, "no history yet\n")


def test_a_worker_that_cannot_load_the_file_records_the_status_it_left(
    cli: Settings, postgres_engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    copy_tasks(cli.tasks_dir, RAISES_FILE)

    assert run(capsys, "run", RAISES, "--inline")[0] == FAILED

    assert history(capsys, RAISES) == [
        ("pending", "enqueued", 1, "run", ME),
        ("enqueued", "failed", 1, "status", HOST),
    ]


def rows(runtime: Runtime) -> list[tuple[str, str, str]]:
    """Every history row as (version, from, to)."""
    with runtime.session() as session:
        return [
            (row.version, row.from_status, row.to_status)
            for row in session.scalars(select(TaskHistory).order_by(TaskHistory.id))
        ]


def test_a_change_whose_transaction_rolls_back_leaves_no_row(db_runtime: Runtime) -> None:
    version = "20250101000000"
    with db_runtime.session() as session, session.begin():
        insert_missing(session, [(version, "a_task")])

    with pytest.raises(RuntimeError), db_runtime.session() as session, session.begin():
        assert move(session, version, Status.PENDING, Status.ENQUEUED, 0, {"epoch": 1})
        raise RuntimeError("the batch failed after the move")
    assert rows(db_runtime) == []

    with db_runtime.session() as session, session.begin():
        assert move(session, version, Status.PENDING, Status.ENQUEUED, 0, {"epoch": 1})
        assert not move(session, version, Status.PENDING, Status.CANCELLED)
    assert rows(db_runtime) == [(version, "pending", "enqueued")]
