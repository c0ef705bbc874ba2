"""A deploy with nothing new imports neither Celery, kombu, the ORM nor SQLAlchemy's PostgreSQL
dialect: the hook stays light."""

from __future__ import annotations

import json
import subprocess
import sys

from sqlalchemy import Engine, text

from data_tasks.settings import Settings
from deploy_hooks.exit_codes import OK
from tests.conftest import copy_tasks
from tests.processes import REPO, environment

# The deploy hook as `python -m deploy_hooks.enqueue` runs it, then the modules it imported.
HOOK = """
import json, sys
from deploy_hooks.enqueue import main
code = main([])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""
# On PostgreSQL the check for nothing new talks to psycopg directly, without the dialect.
HEAVY = {"celery", "kombu", "sqlalchemy.orm", "sqlalchemy.dialects.postgresql"}


def hook(settings: Settings) -> tuple[int, list[str], set[str]]:
    """Run the hook in a fresh process: its exit code, its output lines, the heavy modules."""
    result = subprocess.run(
        [sys.executable, "-c", HOOK],
        env=environment(settings),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    *lines, last = result.stdout.splitlines()
    found = json.loads(last)
    return found["code"], lines, HEAVY & set(found["modules"])


def test_a_deploy_with_nothing_new_imports_no_celery_kombu_orm_or_dialect(
    pg_settings: Settings, postgres_engine: Engine
) -> None:
    copy_tasks(pg_settings.tasks_dir, "20250105000000_count_items_at_once.py")

    code, lines, heavy = hook(pg_settings)
    # Something to publish: the full pass, with Celery's app and the ORM.
    assert code == OK and lines[0].startswith("enqueued 20250105000000"), lines
    assert heavy == HEAVY

    # Still open: the pass sweeps it, so the full pass runs again.
    code, lines, heavy = hook(pg_settings)
    assert code == OK and "running  20250105000000 (already in flight)" in lines, lines
    assert "sqlalchemy.orm" in heavy

    with postgres_engine.begin() as connection:
        connection.execute(text("UPDATE task_records SET status = 'succeeded'"))
    code, lines, heavy = hook(pg_settings)
    assert code == OK
    assert lines[0] == "nothing new to enqueue" and lines[1].startswith("deploy hook done in ")
    assert heavy == set()


def test_hosts_in_the_query_are_checked_through_sqlalchemys_dialect(
    pg_settings: Settings, postgres_engine: Engine
) -> None:
    url = postgres_engine.url
    in_query = url.set(host=None, port=None, query={"host": str(url.host), "port": str(url.port)})
    settings = pg_settings.with_(database_url=in_query.render_as_string(hide_password=False))
    assert hook(settings)[0] == OK  # the full pass creates the tables

    code, lines, heavy = hook(settings)
    assert code == OK and lines[0] == "nothing new to enqueue", lines
    assert heavy == {"sqlalchemy.dialects.postgresql"}
