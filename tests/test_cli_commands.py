"""Every operator command through `main([...])`, as a person or a script would run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, text

from data_tasks.settings import Settings
from deploy_hooks.cli import main
from deploy_hooks.exit_codes import FAILED, OK, TIMED_OUT, USAGE
from tests.conftest import copy_tasks
from tests.items import applied_counts, create_items
from tests.processes import REPO, environment, run_cli

COUNT = "20250301000000"
COUNT_FILE = "20250301000000_ops_count_items.py"
POISONED = "20250301000100"
POISONED_FILE = "20250301000100_ops_poisoned_items.py"
UNKNOWN = "20991231000000"


@pytest.fixture
def cli(pg_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The environment `main` reads its settings from, pointing at the test's services."""
    for key, value in environment(pg_settings).items():
        monkeypatch.setenv(key, value)
    return pg_settings


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run one command; returns its exit code, stdout and stderr."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def failed_at_450(cli: Settings, engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    copy_tasks(cli.tasks_dir, POISONED_FILE)
    create_items(engine, 1000)
    with engine.begin() as connection:
        connection.execute(text("UPDATE items SET label = 'poison' WHERE id = 450"))
    code, _, err = run(capsys, "run", POISONED, "--inline")
    assert code == FAILED
    assert err == f"failed {POISONED} ops_poisoned_items: RuntimeError: item 450 is poisoned\n"


def test_status_shows_progress_errors_and_waits(
    cli: Settings, postgres_engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    failed_at_450(cli, postgres_engine, capsys)
    copy_tasks(cli.tasks_dir, "20250302000000_ops_first.py", "20250302000100_ops_second.py")

    code, out, _ = run(capsys, "status")

    assert code == OK
    lines = out.splitlines()
    assert lines[0].split() == ["VERSION", "NAME", "STATUS", "PROGRESS", "TRIES", "NOTE"]
    assert lines[1].split()[:3] == [POISONED, "ops_poisoned_items", "failed"]
    # The run stopped short: its total is still the one estimated at its start.
    assert "[########............] 400/~1000  40.0%" in lines[1]
    assert lines[1].endswith("RuntimeError: item 450 is poisoned")
    assert lines[3].split()[:3] == ["20250302000100", "ops_second", "pending"]
    assert lines[3].endswith("waiting on 20250302000000")

    code, out, _ = run(capsys, "status", "--json")
    rows = {row["version"]: row for row in json.loads(out)}
    assert rows[POISONED]["percent"] == 40.0 and rows[POISONED]["cursor"] == 400
    assert (rows[POISONED]["total"], rows[POISONED]["total_estimated"]) == (1000, True)
    assert rows["20250302000100"]["waiting_on"] == ["20250302000000"]


def test_show_prints_the_whole_record_and_traceback(
    cli: Settings, postgres_engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    failed_at_450(cli, postgres_engine, capsys)

    code, out, _ = run(capsys, "show", POISONED)

    assert code == OK
    fields = [line.split(None, 1) for line in out.split("\ntraceback:")[0].splitlines()]
    assert fields[:4] == [
        ["version", POISONED],
        ["name", "ops_poisoned_items"],
        ["status", "failed"],
        ["progress", "[########............] 400/~1000  40.0%"],
    ]
    assert ["cursor", "400"] in fields
    assert ["total_estimated", "true"] in fields
    assert ["last_error", "RuntimeError: item 450 is poisoned"] in fields
    assert "\ntraceback:\nTraceback (most recent call last):\n" in out
    assert out.rstrip().endswith("RuntimeError: item 450 is poisoned")
    code, out, _ = run(capsys, "show", POISONED, "--json")
    assert json.loads(out)["traceback"].startswith("Traceback")


def test_run_inline_prints_progress_and_the_outcome(
    cli: Settings, postgres_engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    copy_tasks(cli.tasks_dir, COUNT_FILE)
    create_items(postgres_engine, 300)

    code, out, _ = run(capsys, "run", COUNT, "--inline")

    assert code == OK
    lines = out.splitlines()
    assert (
        lines[0] == f"running {COUNT} ops_count_items inline (Ctrl-C stops after the current batch)"
    )
    assert any(line.startswith("[####################] 300/300 100.0%") for line in lines)
    assert lines[-1].startswith(f"succeeded {COUNT} ops_count_items: 300 rows in 1 chunk(s), ")
    assert applied_counts(postgres_engine) == {1: 300}
    assert run(capsys, "run", COUNT)[0] == USAGE


def test_retry_publishes_a_chunk_job_to_the_broker(
    cli: Settings,
    postgres_engine: Engine,
    redis_client: redis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    failed_at_450(cli, postgres_engine, capsys)

    code, out, _ = run(capsys, "retry", POISONED)

    assert code == OK
    assert out.startswith(f"enqueued {POISONED} ops_poisoned_items (epoch ")
    assert out.endswith(", retried: resumes at its cursor)\n")
    assert redis_client.llen(cli.queue) == 1
    code, _, err = run(capsys, "retry", POISONED)
    assert (code, err) == (
        FAILED,
        f"error: data task {POISONED}: cannot retry it while it is enqueued\n",
    )


def test_pause_resume_and_cancel(
    cli: Settings,
    postgres_engine: Engine,
    redis_client: redis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    copy_tasks(cli.tasks_dir, COUNT_FILE)
    create_items(postgres_engine, 10)
    assert run(capsys, "retry", COUNT)[0] == FAILED  # pending: nothing to retry

    code, out, err = run(capsys, "pause", COUNT)
    assert (code, err) == (
        FAILED,
        f"error: data task {COUNT}: cannot pause it while it is pending\n",
    )

    code, out, _ = run(capsys, "rerun", COUNT)
    assert code == USAGE
    code, out, _ = run(capsys, "cancel", COUNT)
    assert (code, out) == (OK, f"cancelled {COUNT} (was pending)\n")
    code, out, _ = run(capsys, "rerun", COUNT, "--yes")
    assert code == OK and out.endswith(", rerun from the beginning)\n")
    code, out, _ = run(capsys, "pause", COUNT)
    assert (code, out) == (
        OK,
        f"paused {COUNT} (was enqueued; a running chunk stops after its batch)\n",
    )
    code, out, _ = run(capsys, "resume", COUNT)
    assert code == OK and out.endswith(", resumed at its cursor)\n")
    assert redis_client.llen(cli.queue) == 2


def test_rerun_needs_yes(
    cli: Settings, postgres_engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    copy_tasks(cli.tasks_dir, COUNT_FILE)
    create_items(postgres_engine, 10)
    run(capsys, "run", COUNT, "--inline")

    code, out, err = run(capsys, "rerun", COUNT)

    assert (code, out) == (USAGE, "")
    assert err == (
        f"error: rerun applies every batch of {COUNT} again from the beginning; "
        "add --yes to do it\n"
    )
    assert [row["status"] for row in json.loads(run(capsys, "status", "--json")[1])] == [
        "succeeded"
    ]


def test_skip_one_and_all_pending(
    cli: Settings, postgres_engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    copy_tasks(cli.tasks_dir, COUNT_FILE, POISONED_FILE)
    create_items(postgres_engine, 10)

    assert run(capsys, "skip", COUNT) == (OK, f"skipped {COUNT} ops_count_items\n", "")
    assert run(capsys, "skip", "--all-pending") == (
        OK,
        f"skipped {POISONED} ops_poisoned_items\n",
        "",
    )
    assert run(capsys, "skip", "--all-pending") == (
        OK,
        "nothing to skip: no pending data tasks\n",
        "",
    )
    assert run(capsys, "skip")[0] == USAGE
    assert applied_counts(postgres_engine) == {0: 10}


def test_wait_exit_codes(
    cli: Settings, postgres_engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    failed_at_450(cli, postgres_engine, capsys)
    copy_tasks(cli.tasks_dir, COUNT_FILE)

    code, _, err = run(capsys, "wait", COUNT, "--timeout", "0")
    assert (code, err) == (TIMED_OUT, f"timed out after 0s; not done: {COUNT} pending 0\n")
    code, _, err = run(capsys, "wait", "--timeout", "0")
    assert (code, err) == (
        FAILED,
        f"failed {POISONED}: failed: RuntimeError: item 450 is poisoned\n",
    )

    run(capsys, "run", COUNT, "--inline")
    assert run(capsys, "wait", COUNT, "--timeout", "0") == (
        OK,
        "done: 1 data task(s) succeeded or skipped\n",
        "",
    )


def test_dry_run_prints_each_batch(
    cli: Settings, postgres_engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    copy_tasks(cli.tasks_dir, COUNT_FILE)
    create_items(postgres_engine, 150)

    code, out, _ = run(capsys, "dry-run", COUNT, "--batches", "3")

    assert code == OK
    assert out == (
        f"dry run of {COUNT} ops_count_items from cursor null (rolled back)\n"
        "batch 1: 100 keys, 100 rows changed by 1 statement(s), next cursor 100\n"
        "batch 2: 50 keys, 50 rows changed by 1 statement(s), next cursor 150\n"
        "no more batches: the task would finish here\n"
        "would change 150 rows in 2 batch(es)\n"
    )
    assert applied_counts(postgres_engine) == {0: 150}
    report = json.loads(run(capsys, "dry-run", COUNT, "--json")[1])
    assert report["rows_changed"] == 100 and report["batches"][0]["size"] == 100


@pytest.mark.parametrize(
    "argv",
    [
        ["show", UNKNOWN],
        ["run", UNKNOWN, "--inline"],
        ["retry", UNKNOWN],
        ["pause", UNKNOWN],
        ["resume", UNKNOWN],
        ["cancel", UNKNOWN],
        ["skip", UNKNOWN],
        ["rerun", UNKNOWN, "--yes"],
        ["wait", UNKNOWN, "--timeout", "0"],
        ["dry-run", UNKNOWN],
    ],
)
def test_an_unknown_version_is_one_line_and_exit_1(
    cli: Settings, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    copy_tasks(cli.tasks_dir, COUNT_FILE)
    assert run(capsys, *argv) == (FAILED, "", f"error: unknown data task version '{UNKNOWN}'\n")


def test_an_unreachable_database_is_one_line_and_exit_3(
    cli: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/none")
    code, _, err = run(capsys, "status")
    assert code == 3
    assert err.startswith("error: database unreachable at postgresql://postgres@127.0.0.1:1/none: ")
    assert err.count("\n") == 1


def test_python_dash_m_and_the_console_script(cli: Settings, postgres_engine: Engine) -> None:
    copy_tasks(cli.tasks_dir, COUNT_FILE)
    by_module = run_cli(cli, "status")
    script = subprocess.run(
        [str(Path(sys.executable).parent / "deploy-hooks"), "status"],
        env=environment(cli),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert by_module.returncode == script.returncode == OK, by_module.stderr + script.stderr
    assert by_module.stdout == script.stdout
    assert f"{COUNT}  ops_count_items  pending" in script.stdout


def test_a_usage_error_exits_64_not_2_which_means_invalid_task_files(
    cli: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "status", "--bogus")
    assert code == USAGE
    assert err.splitlines()[-1] == (
        "python -m deploy_hooks: error: unrecognized arguments: --bogus"
    )
