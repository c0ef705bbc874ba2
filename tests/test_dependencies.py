"""Explicit dependencies: parallel when independent, waiting until what they need succeeded."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from data_tasks import operations
from data_tasks.runtime import Runtime
from data_tasks.scheduler import enqueue
from data_tasks.settings import Settings
from deploy_hooks.formatting import format_table
from tests.conftest import copy_tasks
from tests.items import applied_counts, create_items
from tests.processes import WorkerProcess, run_cli, run_hook, wait_for
from tests.running import drain

FIRST = "20250302000000"
SECOND = "20250302000100"
INDEPENDENT = "20250302000200"
FILES = (
    "20250302000000_ops_first.py",
    "20250302000100_ops_second.py",
    "20250302000200_ops_independent.py",
)


def records(settings: Settings) -> dict[str, dict[str, object]]:
    """Each version's record, read through `status --json` as a script would."""
    result = run_cli(settings, "status", "--json")
    assert result.returncode == 0, result.stderr
    return {row["version"]: row for row in json.loads(result.stdout)}


def all_succeeded(settings: Settings) -> dict[str, dict[str, object]] | None:
    """The records once all three tasks succeeded."""
    found = records(settings)
    return found if {row["status"] for row in found.values()} == {"succeeded"} else None


@pytest.mark.e2e
def test_a_dependent_task_waits_then_starts_when_its_dependency_succeeds_without_a_second_hook(
    pg_settings: Settings, postgres_engine: Engine, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    settings = pg_settings.with_(chunk_seconds=0.2)
    copy_tasks(settings.tasks_dir, *FILES)
    create_items(postgres_engine, 4000)

    hook = run_hook(settings)

    assert hook.returncode == 0, hook.stderr
    assert f"enqueued {FIRST} ops_first" in hook.stdout
    assert f"enqueued {INDEPENDENT} ops_independent" in hook.stdout
    assert f"waiting  {SECOND} on {FIRST}" in hook.stdout
    before = records(settings)
    assert before[SECOND]["status"] == "pending" and before[SECOND]["waiting_on"] == [FIRST]
    assert f"{SECOND}  ops_second" in run_cli(settings, "status").stdout
    assert f"waiting on {FIRST}" in run_cli(settings, "status").stdout

    workers.append(WorkerProcess(settings, tmp_path, concurrency=2).wait_ready())
    done = wait_for(lambda: all_succeeded(settings), timeout=180, interval=0.3)
    assert done is not None

    first_finished = datetime.fromisoformat(str(done[FIRST]["finished_at"]))
    second_started = datetime.fromisoformat(str(done[SECOND]["started_at"]))
    assert second_started >= first_finished
    # ops_second copies `applied` into the label: every row saw ops_first's write.
    with postgres_engine.connect() as connection:
        labels = connection.execute(text("SELECT label, count(*) FROM items GROUP BY label"))
        assert dict(labels.all()) == {"seen 1": 4000}
    assert applied_counts(postgres_engine) == {1: 4000}
    assert f"event=unblocked version={SECOND}" in workers[0].log()


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            ("20250303000000_ops_cycle_a.py", "20250303000100_ops_cycle_b.py"),
            "error: dependency cycle: 20250303000000 -> 20250303000100 -> 20250303000000\n",
        ),
        (
            ("20250303000200_ops_unknown_dependency.py",),
            "error: data task 20250303000200 depends on unknown version(s) ['20991231000000']\n",
        ),
    ],
)
def test_a_cycle_or_an_unknown_dependency_fails_the_deploy_hook_with_one_line(
    pg_settings: Settings, postgres_engine: Engine, files: tuple[str, ...], message: str
) -> None:
    copy_tasks(pg_settings.tasks_dir, *files)

    hook = run_hook(pg_settings)

    assert (hook.returncode, hook.stderr) == (2, message)


def test_independent_tasks_are_enqueued_together_and_dependents_wait(
    runtime: Runtime, postgres_engine: Engine
) -> None:
    copy_tasks(runtime.settings.tasks_dir, *FILES)
    create_items(postgres_engine, 100)

    report = enqueue(runtime)

    assert sorted(item.version for item in report.enqueued) == [FIRST, INDEPENDENT]
    assert report.waiting == {SECOND: [FIRST]}
    drain(runtime)
    assert {view.record.status for view in operations.status(runtime)} == {"succeeded"}


def test_status_says_a_task_waits_on_a_dependency_that_will_not_finish(
    runtime: Runtime, postgres_engine: Engine
) -> None:
    copy_tasks(runtime.settings.tasks_dir, *FILES)
    create_items(postgres_engine, 100)
    operations.cancel(runtime, FIRST)

    table = format_table(operations.status(runtime)).splitlines()

    second = next(line for line in table if line.startswith(SECOND))
    assert second.split()[2] == "pending"
    assert second.endswith(f"waiting on {FIRST} (cancelled)")
    assert enqueue(runtime).waiting == {SECOND: [FIRST]}
