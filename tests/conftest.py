"""Fixtures: a fresh PostgreSQL database per session, a flushed Redis database, task folders."""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest
import redis
from sqlalchemy import Engine, text

from data_tasks.database import make_engine
from data_tasks.publisher import RecordingPublisher
from data_tasks.runtime import Runtime
from data_tasks.settings import Settings
from tests.processes import WorkerProcess
from tests.services import (
    REDIS_URL,
    create_mariadb_database,
    create_postgres_database,
    drop_mariadb_database,
    drop_postgres_database,
    empty_mariadb_database,
    flushed_redis,
)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    """A SIGTERM (a CI timeout, a `kill`) ends the run as Ctrl-C does, through the teardowns.

    The workers, Procfile entries and servers the tests start run in sessions of their own;
    without their fixtures' teardown they outlive the run and take the next run's jobs.
    """
    signal.signal(signal.SIGTERM, _interrupt)


FIXTURE_TASKS = Path(__file__).resolve().parent / "fixtures" / "tasks"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database of its own for this test session on the real PostgreSQL."""
    url = create_postgres_database()
    yield url
    drop_postgres_database(url)


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    """The tests' Redis database, flushed before and after."""
    client = flushed_redis()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def postgres_engine(postgres_url: str) -> Iterator[Engine]:
    """An engine on the session's database, emptied of every table before the test."""
    engine = make_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def mariadb_url() -> Iterator[str]:
    """A database of its own for this test session on the real MariaDB."""
    url = create_mariadb_database()
    yield url
    drop_mariadb_database(url)


@pytest.fixture
def mariadb_engine(mariadb_url: str) -> Iterator[Engine]:
    """An engine on the session's MariaDB database, emptied of every table before the test."""
    engine = make_engine(mariadb_url)
    empty_mariadb_database(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file of its own."""
    return f"sqlite:///{tmp_path / 'records.db'}"


def copy_tasks(destination: Path, *names: str) -> Path:
    """A task folder holding copies of the named fixture task files."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(FIXTURE_TASKS / name, destination / name)
    return destination


@pytest.fixture
def tasks_dir(tmp_path: Path) -> Path:
    """An empty task folder; tests copy fixture tasks into it."""
    path = tmp_path / "tasks"
    path.mkdir()
    return path


def short_settings(engine: Engine, tasks_dir: Path) -> Settings:
    """Settings on the engine's database and the tests' Redis, with short budgets for tests."""
    return Settings(
        database_url=engine.url.render_as_string(hide_password=False),
        redis_url=REDIS_URL,
        tasks_dir=tasks_dir,
        chunk_seconds=2.0,
        stale_seconds=5.0,
        lock_seconds=3.0,
        retry_base_seconds=0.2,
        retry_max_seconds=1.0,
        unknown_version_countdown=0.5,
    )


@pytest.fixture
def pg_settings(postgres_engine: Engine, redis_client: redis.Redis, tasks_dir: Path) -> Settings:
    """Settings on the real PostgreSQL and Redis, with short budgets for tests."""
    return short_settings(postgres_engine, tasks_dir)


@pytest.fixture
def mariadb_settings(
    mariadb_engine: Engine, redis_client: redis.Redis, tasks_dir: Path
) -> Settings:
    """Settings on the real MariaDB and Redis, with short budgets for tests."""
    return short_settings(mariadb_engine, tasks_dir)


@pytest.fixture
def runtime(pg_settings: Settings) -> Iterator[Runtime]:
    """An in-process runtime that records what it publishes instead of sending it."""
    built = Runtime.build(pg_settings, RecordingPublisher(), hostname="tests@localhost")
    built.create_tables()
    yield built
    built.close()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    """Worker processes a test starts; every one still alive is killed at the end."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        if worker.alive:
            worker.kill()


@pytest.fixture(params=["postgresql", "sqlite", "mariadb"])
def db_runtime(request: pytest.FixtureRequest, pg_settings: Settings) -> Iterator[Runtime]:
    """An in-process runtime (recording publisher) whose records and data are on PostgreSQL,
    then on SQLite, then on MariaDB."""
    settings = pg_settings
    if request.param == "sqlite":
        settings = pg_settings.with_(database_url=request.getfixturevalue("sqlite_url"))
    if request.param == "mariadb":
        settings = request.getfixturevalue("mariadb_settings")
    built = Runtime.build(settings, RecordingPublisher(), hostname="tests@localhost")
    built.create_tables()
    yield built
    built.close()


# The example Django project's fixtures, for the tests of the Django app.
from tests.shop import shop, shop_database, shop_in_process  # noqa: E402, F401
