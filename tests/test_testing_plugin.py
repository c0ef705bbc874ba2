"""What users get for testing their data tasks: a run through the real runner, forced chunks."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from data_tasks.status import Status
from data_tasks.testing import DataTaskRunner, run_data_task
from tests.conftest import copy_tasks
from tests.items import applied_counts, create_items

COUNT = "20250301000000"
COUNT_FILE = "20250301000000_ops_count_items.py"


@pytest.fixture
def data_tasks_database_url(postgres_engine: Engine) -> str:
    """The plugin's database fixture, overridden as a user's conftest would."""
    return postgres_engine.url.render_as_string(hide_password=False)


@pytest.fixture
def data_tasks_dir(tasks_dir: Path) -> Path:
    """The plugin's task folder fixture, overridden as a user's conftest would."""
    return copy_tasks(tasks_dir, COUNT_FILE)


def test_the_plugin_fixture_runs_a_task_one_batch_per_chunk(
    data_task_runner: DataTaskRunner, postgres_engine: Engine
) -> None:
    create_items(postgres_engine, 1000)

    run = data_task_runner.run(COUNT, batches_per_chunk=1)

    assert run.status == Status.SUCCEEDED
    # Ten chunks of one batch, each handing over to the next, then one that finds no more.
    assert [chunk["batches"] for chunk in run.chunks] == [1] * 10 + [0]
    assert applied_counts(postgres_engine) == {1: 1000}
    assert data_task_runner.record(COUNT).processed == 1000


def test_run_data_task_needs_no_redis_and_reports_a_failure(
    data_tasks_database_url: str, data_tasks_dir: Path, postgres_engine: Engine
) -> None:
    create_items(postgres_engine, 300)
    with postgres_engine.begin() as connection:
        connection.execute(text("ALTER TABLE items ADD CHECK (applied < 1 OR id <> 250)"))

    run = run_data_task(
        data_tasks_database_url, COUNT, tasks_dir=data_tasks_dir, batches_per_chunk=2
    )

    assert run.status == Status.FAILED
    assert run.record is not None and run.record.processed == 200
    assert "violates check constraint" in (run.record.last_error or "")
    assert applied_counts(postgres_engine) == {1: 200, 0: 100}
