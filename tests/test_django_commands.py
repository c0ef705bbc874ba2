"""`manage.py data_tasks ...`: the deploy hook and every operator command in a Django project,
with task files found through the app registry, models imported, and the same exit codes."""

from __future__ import annotations

import json

from deploy_hooks.exit_codes import (
    DATABASE_UNREACHABLE,
    FAILED,
    INVALID_TASKS,
    OK,
    TIMED_OUT,
    USAGE,
)
from tests.shop import APPEND, FAST, Shop

# The example's own app task, in accounts/data_migrations/.
NORMALIZE = "20250901000000"


def test_the_hook_finds_app_and_project_task_files_and_imports_their_models(shop: Shop) -> None:
    shop.add_task("20250801000000_append_x.py")

    status = shop.manage("data_tasks", "status", "--json")
    hook = shop.manage("data_tasks", "enqueue")

    assert status.returncode == OK, status.stderr
    versions = [task["version"] for task in json.loads(status.stdout)]
    assert versions == [APPEND, NORMALIZE]
    assert hook.returncode == OK, hook.stderr
    assert f"enqueued {APPEND} append_x" in hook.stdout
    assert f"waiting  {NORMALIZE} on {APPEND}" in hook.stdout


def test_the_commands_exit_as_python_m_deploy_hooks_does(shop: Shop) -> None:
    shop.add_task("20250801000000_append_x.py")

    assert shop.manage("data_tasks", "show", "20991231000000").returncode == FAILED
    assert shop.manage("data_tasks", "pause", APPEND).returncode == FAILED  # still pending
    assert shop.manage("data_tasks", "retry").returncode == USAGE
    waited = shop.manage("data_tasks", "wait", "--timeout", "0.2")
    assert waited.returncode == TIMED_OUT, waited.stderr
    unreachable = shop.manage("data_tasks", "status", env={"SHOP_DB_PORT": "1"})
    assert unreachable.returncode == DATABASE_UNREACHABLE, unreachable.stderr
    unknown = json.dumps({**FAST, "DIR": str(shop.tasks_dir), "CHUNK_SECOND": 1})
    bad = shop.manage("data_tasks", "status", env={"TEST_DATA_TASKS": unknown})
    assert bad.returncode == USAGE
    assert bad.stderr.strip() == "error: DATA_TASKS has an unknown key 'CHUNK_SECOND'"
    flower = shop.manage("data_tasks", "flower", env={"FLOWER_BASIC_AUTH": ""})
    assert flower.returncode == USAGE and "refusing to start Flower" in flower.stderr
    (shop.tasks_dir / "20250803000000_Bad Name.py").write_text("")
    refused = shop.manage("data_tasks", "enqueue")
    assert refused.returncode == INVALID_TASKS
    assert refused.stderr.count("\n") == 1, refused.stderr


def test_new_writes_into_the_project_folder_and_dry_run_rolls_orm_writes_back(
    shop: Shop,
) -> None:
    shop.add_task("20250801000000_append_x.py")
    shop.add_customers(250)

    created = shop.manage("data_tasks", "new", "backfill_orders")
    dry = shop.manage("data_tasks", "dry-run", APPEND, "--batches", "2")

    assert created.returncode == OK, created.stderr
    assert [p.name.endswith("_backfill_orders.py") for p in shop.tasks_dir.iterdir()].count(True)
    assert dry.returncode == OK, dry.stderr
    assert "(rolled back)" in dry.stdout
    assert "would change 200 rows in 2 batch(es)" in dry.stdout  # the ORM's, counted
    assert shop.notes() == {"": 250}
