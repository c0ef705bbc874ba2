"""Tools for users' own tests of their data tasks (a pytest plugin, loaded automatically).

Run a data task against a test database through the real runner and records, in the test's
process, with an in-memory Redis. `batches_per_chunk` ends every chunk after that many
batches, so a test can prove that the task resumes without skipping or repeating a row:

    def test_backfill_resumes(data_task_runner, engine):
        run = data_task_runner.run("20260102090000", batches_per_chunk=1)
        assert run.status == "succeeded" and len(run.chunks) > 1
        # ... then check every row was changed exactly once

Override the `data_tasks_database_url` and `data_tasks_dir` fixtures to point at your test
database and task folder (defaults: $DATA_TASKS_TEST_DATABASE_URL or $DATABASE_URL, and
$DATA_TASKS_DIR or ./tasks).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

from data_tasks.coordination import Coordinator
from data_tasks.database import make_engine
from data_tasks.discovery import Catalog
from data_tasks.operations import InlineRun, run_inline
from data_tasks.publisher import RecordingPublisher
from data_tasks.records import TaskRecord, get
from data_tasks.runtime import Runtime
from data_tasks.settings import Settings


class DataTaskRunner:
    """Runs data tasks of one folder against one database, in this process."""

    def __init__(
        self,
        database_url: str,
        tasks_dir: Path | str = Path("tasks"),
        settings: Settings | None = None,
    ) -> None:
        try:
            # Imported here: pytest loads this plugin in every environment that has the package.
            import fakeredis
        except ModuleNotFoundError:
            raise ModuleNotFoundError(
                "data_task_runner needs fakeredis: pip install 'deferred-data-tasks[testing]'"
            ) from None
        base = settings or Settings(chunk_seconds=3600.0, retry_base_seconds=0.0)
        self.settings = base.with_(database_url=database_url, tasks_dir=Path(tasks_dir))
        # Jobs for other versions (the ones a success unblocks) are kept here, not sent.
        self.publisher = RecordingPublisher()
        self.runtime = Runtime(
            settings=self.settings,
            engine=make_engine(database_url),
            coordinator=Coordinator(
                fakeredis.FakeRedis(server=fakeredis.FakeServer()), self.settings
            ),
            publisher=self.publisher,
            catalog=Catalog(self.settings.tasks_dirs),
            hostname="data-task-tests",
        )
        self.runtime.create_tables()

    def run(
        self,
        version: str,
        *,
        batches_per_chunk: int | None = None,
        ignore_dependencies: bool = True,
    ) -> InlineRun:
        """Run a task to its end (succeeded or failed); each chunk ends after N batches if given."""
        return run_inline(
            self.runtime,
            version,
            batches_per_chunk=batches_per_chunk,
            ignore_dependencies=ignore_dependencies,
        )

    def record(self, version: str) -> TaskRecord:
        """The task's record as it is now."""
        with self.runtime.session() as session:
            return get(session, version)

    def close(self) -> None:
        """Release the database connections."""
        self.runtime.close()

    def __enter__(self) -> DataTaskRunner:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.close()


def run_data_task(
    database_url: str,
    version: str,
    *,
    tasks_dir: Path | str = Path("tasks"),
    batches_per_chunk: int | None = None,
) -> InlineRun:
    """Run one data task against a database through the real runner and return what it did."""
    with DataTaskRunner(database_url, tasks_dir) as runner:
        return runner.run(version, batches_per_chunk=batches_per_chunk)


@pytest.fixture
def data_tasks_database_url() -> str:
    """The database the data tasks under test run against; override it in your conftest."""
    url = os.environ.get("DATA_TASKS_TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if not url:
        pytest.skip("set DATA_TASKS_TEST_DATABASE_URL or override data_tasks_database_url")
    return url


@pytest.fixture
def data_tasks_dir() -> Path:
    """The folder of data task files under test; override it in your conftest."""
    return Path(os.environ.get("DATA_TASKS_DIR", "tasks"))


@pytest.fixture
def data_task_runner(
    data_tasks_database_url: str, data_tasks_dir: Path
) -> Iterator[DataTaskRunner]:
    """A DataTaskRunner on the test database and task folder."""
    with DataTaskRunner(data_tasks_database_url, data_tasks_dir) as runner:
        yield runner
