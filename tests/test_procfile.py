"""The Procfile's processes, run as a platform would run them."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from data_tasks.publisher import RecordingPublisher
from data_tasks.records import get
from data_tasks.runtime import Runtime
from data_tasks.scheduler import enqueue
from data_tasks.settings import Settings
from data_tasks.status import Status
from tests.conftest import copy_tasks
from tests.items import applied_counts, create_items
from tests.processes import REPO, WorkerProcess, environment, wait_for

pytestmark = pytest.mark.e2e


def procfile() -> dict[str, str]:
    """The Procfile's entries by process type."""
    entries: dict[str, str] = {}
    for line in (REPO / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        entries[name.strip()] = command.strip()
    return entries


def test_the_procfile_runs_the_deploy_hook_workers_a_sweep_and_flower() -> None:
    entries = procfile()

    assert set(entries) == {"release", "worker", "sweep", "flower"}
    assert entries["release"] == "python -m deploy_hooks.enqueue"
    assert entries["worker"].startswith("celery -A worker worker")
    assert entries["sweep"].startswith("celery -A worker beat")


def test_the_sweep_process_publishes_a_job_the_broker_lost(
    pg_settings: Settings,
    postgres_engine: Engine,
    redis_client: redis.Redis,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    copy_tasks(pg_settings.tasks_dir, "20250101000000_count_items.py")
    create_items(postgres_engine, 5_000)
    # A claim whose message never reached the broker, and whose queued marker is gone:
    # what a Redis restart leaves behind.
    lost = Runtime.build(pg_settings, RecordingPublisher())
    enqueue(lost)
    lost.close()
    redis_client.delete(f"{pg_settings.key_prefix}:queued:20250101000000:0")

    workers.append(WorkerProcess(pg_settings, tmp_path).wait_ready())
    # The Procfile's command as written, run by this Python from the app's folder (tmp_path
    # here), as honcho and foreman run it: its schedule file stays in that folder.
    command = shlex.split(procfile()["sweep"])
    assert command[0] == "celery"
    assert not any("/tmp/" in argument for argument in command)
    with (tmp_path / "sweep.log").open("wb") as log:
        sweep = subprocess.Popen(
            [sys.executable, "-m", *command],
            env=environment(pg_settings, DATA_TASKS_SWEEP_SECONDS="1"),
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: status(postgres_engine) is Status.SUCCEEDED, timeout=60, interval=0.5)
        finally:
            sweep.send_signal(signal.SIGTERM)
            sweep.wait(timeout=30)

    assert applied_counts(postgres_engine) == {1: 5_000}
    assert list(tmp_path.glob(".celerybeat-schedule*")), "the schedule is kept with the app"
    assert "sweep enqueued 20250101000000" in workers[0].log()


def status(engine: Engine) -> Status:
    """The count_items task's status."""
    with Session(engine) as session:
        return get(session, "20250101000000").state
