"""Eight deploy hooks started at once against fifty pending tasks: one chunk job per task."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine

from data_tasks.settings import Settings
from tests.faults.harness import (
    ROWS,
    exactly_once,
    fault_settings,
    queued_messages,
    record,
    wait_status,
)
from tests.faults.ledger import FaultCase
from tests.items import create_items
from tests.processes import REPO, WorkerProcess, environment

pytestmark = pytest.mark.e2e

HOOKS = 8
TASKS = 50
# Each task counts the items whose id falls in its residue class: together, every row once.
SHARE = '''"""Count one fiftieth of the items."""

from sqlalchemy import text
from sqlalchemy.orm import Session

from data_tasks import one_shot


@one_shot(depends_on=[])
def faulty_share_{k}(session: Session) -> None:
    session.execute(text("UPDATE items SET applied = applied + 1 WHERE id % {n} = {k}"))
'''


def test_hooks_started_together_publish_each_task_once(
    pg_settings: Settings,
    postgres_engine: Engine,
    redis_client: redis.Redis,
    workers: list[WorkerProcess],
    tmp_path: Path,
    faults: FaultCase,
) -> None:
    faults.describe(
        "8 deploy hooks started at once against 50 pending tasks (50 messages, one per task)"
    )
    settings = fault_settings(pg_settings)
    create_items(postgres_engine, ROWS)
    versions = [f"20250902{k:06d}" for k in range(TASKS)]
    for k, version in enumerate(versions):
        path = settings.tasks_dir / f"{version}_faulty_share_{k}.py"
        path.write_text(SHARE.format(k=k, n=TASKS))

    for _ in range(HOOKS):
        faults.inject("a deploy hook started with the others", *versions)
    hooks = [
        subprocess.Popen(
            [sys.executable, "-m", "deploy_hooks.enqueue"],
            env=environment(settings),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(HOOKS)
    ]
    outputs = [hook.communicate(timeout=120) for hook in hooks]
    assert [hook.returncode for hook in hooks] == [0] * HOOKS, [err for _, err in outputs]

    published = Counter(message["version"] for message in queued_messages(redis_client))
    assert published == Counter(versions)
    claims = Counter(
        line.split()[1]
        for out, _ in outputs
        for line in out.splitlines()
        if line.startswith("enqueued ")
    )
    assert claims == Counter(versions)
    assert {record(postgres_engine, v)["run_epoch"] for v in versions} == {1}

    workers.append(WorkerProcess(settings, tmp_path, concurrency=2).wait_ready())
    for version in versions:
        wait_status(postgres_engine, version, "succeeded", timeout=120)
    exactly_once(postgres_engine)
