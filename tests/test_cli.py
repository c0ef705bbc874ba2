"""`python -m deploy_hooks status` and `new`: what an operator reads and the file an author gets."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from data_tasks.discovery import discover, load
from data_tasks.records import RECORD_FIELDS
from data_tasks.runtime import Runtime
from data_tasks.shapes import KeysetBackfill
from deploy_hooks.cli import main
from deploy_hooks.new_task import new_task_file
from tests.conftest import copy_tasks
from tests.items import create_items
from tests.processes import environment, run_cli
from tests.running import enqueue_and_drain

EVERY_FIELD = {
    "version",
    "name",
    "status",
    "epoch",
    "cursor",
    "processed",
    "total",
    "attempts",
    "last_error",
    "traceback",
    "worker",
    "enqueued_at",
    "started_at",
    "heartbeat_at",
    "finished_at",
}


@pytest.fixture
def ran(runtime: Runtime) -> Runtime:
    """One task succeeded, one failed after its retries, one waiting behind the failed one."""
    copy_tasks(
        runtime.settings.tasks_dir,
        "20250101000000_count_items.py",
        "20250106000000_always_fails.py",
        "20250109000000_count_items_after_the_rest.py",
    )
    create_items(runtime.engine, 1_200)
    enqueue_and_drain(runtime)
    return runtime


def test_status_json_has_every_field_of_every_record(ran: Runtime) -> None:
    result = run_cli(ran.settings, "status", "--json")

    assert result.returncode == 0, result.stderr
    rows = {row["version"]: row for row in json.loads(result.stdout)}
    assert list(rows) == ["20250101000000", "20250106000000", "20250109000000"]
    for row in rows.values():
        assert set(row) >= EVERY_FIELD
        assert set(RECORD_FIELDS) <= set(row)
    done, failed, waiting = rows.values()
    assert done["name"] == "count_items"
    # One claim (run epoch 1); its one lane started once (lane epoch 1).
    assert (done["status"], done["epoch"], done["cursor"]) == ("succeeded", 1, 1_200)
    assert [(lane["lane"], lane["epoch"]) for lane in done["lanes"]] == [(0, 1)]
    assert (done["processed"], done["total"], done["attempts"]) == (1_200, 1_200, 0)
    assert done["worker"] == "tests@localhost"
    assert done["last_error"] is None and done["traceback"] is None
    stamps = [done[key] for key in ("enqueued_at", "started_at", "heartbeat_at", "finished_at")]
    assert all(datetime.fromisoformat(stamp).tzinfo is not None for stamp in stamps)
    assert stamps == sorted(stamps)
    assert (failed["status"], failed["attempts"]) == ("failed", 3)
    assert failed["last_error"] == "RuntimeError: the data is not what this task expected"
    assert "Traceback (most recent call last)" in failed["traceback"]
    assert (waiting["status"], waiting["epoch"], waiting["started_at"]) == ("pending", 0, None)


def test_status_table_shows_each_task_with_its_state_and_why_it_waits(
    ran: Runtime, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in environment(ran.settings).items():
        monkeypatch.setenv(key, value)

    assert main(["status"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["VERSION", "NAME", "STATUS"]
    table = {line.split()[0]: line for line in lines[1:]}
    assert table["20250101000000"].split()[1:3] == ["count_items", "succeeded"]
    assert "1200/1200" in table["20250101000000"] and "100.0%" in table["20250101000000"]
    assert table["20250106000000"].split()[2] == "failed"
    assert "RuntimeError: the data is not what this task expected" in table["20250106000000"]
    assert table["20250109000000"].split()[2] == "pending"
    assert "waiting on 20250106000000 (failed)" in table["20250109000000"]


def test_new_writes_a_task_file_that_loads(tmp_path: Path) -> None:
    when = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)

    path = new_task_file(tmp_path / "tasks", "backfill_user_names", now=when)

    assert path.name == "20260304050607_backfill_user_names.py"
    [task_file] = discover(tmp_path / "tasks")
    task = load(task_file)
    assert isinstance(task, KeysetBackfill)
    assert (task.version, task.name) == ("20260304050607", "backfill_user_names")
    assert task.description == "Backfill user names."
    assert "exactly once" in path.read_text()


def test_new_through_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATA_TASKS_DIR", str(tmp_path / "tasks"))

    assert main(["new", "fix_totals"]) == 0

    [task_file] = discover(tmp_path / "tasks")
    assert capsys.readouterr().out == f"created {task_file.path}\n"
    assert load(task_file).name == "fix_totals"


@pytest.mark.parametrize("name", ["FixTotals", "fix-totals", "1fix", "", "../evil", "fix totals"])
def test_new_refuses_a_name_that_is_not_snake_case(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATA_TASKS_DIR", str(tmp_path / "tasks"))

    code = main(["new", name])

    assert code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "snake_case" in err[0]
    assert not (tmp_path / "tasks").exists() or list((tmp_path / "tasks").iterdir()) == []
