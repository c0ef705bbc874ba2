"""The example Django project (examples/django_shop) run as its team runs it: manage.py
commands and `celery -A shop worker` processes, on a PostgreSQL database of its own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from data_tasks.database import make_engine
from data_tasks.settings import Settings
from tests.processes import REPO, WorkerProcess, wait_for
from tests.services import REDIS_URL, create_postgres_database, drop_postgres_database

SHOP = REPO / "examples" / "django_shop"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "django"
# Short budgets: dead runners are reclaimed in seconds, frozen batches rolled back in three.
FAST = {
    "CHUNK_SECONDS": 1.0,
    "STALE_SECONDS": 3.0,
    "LOCK_SECONDS": 2.0,
    "BATCH_IDLE_SECONDS": 3.0,
    "MAX_ATTEMPTS": 3,
    "RETRY_BASE_SECONDS": 0.2,
    "RETRY_MAX_SECONDS": 1.0,
}
# The task of most tests: append "x" to each customer's note through the ORM.
APPEND = "20250801000000"


def shop_environment(database: str, tasks_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of the shop's processes: only Django's settings module and the
    settings the shop itself reads (its database name, its broker)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATA_TASKS_", "DATABASE_URL", "REDIS_URL"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="tests.shop_settings",
        PYTHONPATH=f"{REPO}{os.pathsep}{SHOP}",
        PYTHONUNBUFFERED="1",
        SHOP_DB_NAME=database,
        SHOP_BROKER_URL=REDIS_URL,
        TEST_DATA_TASKS=json.dumps({**FAST, "DIR": str(tasks_dir)}),
    )
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def shop_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database for the shop, migrated once with its own `manage.py migrate`."""
    url = create_postgres_database()
    name = url.rsplit("/", 1)[1]
    folder = tmp_path_factory.mktemp("shop_tasks")
    migrated = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--verbosity=0"],
        cwd=SHOP,
        env=shop_environment(name, folder),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert migrated.returncode == 0, migrated.stderr
    yield url
    drop_postgres_database(url)


@pytest.fixture(scope="session")
def shop_in_process(shop_database: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Django set up in this process on the shop's database (for the test client).

    The variables are set only while Django reads them: processes other tests start must
    not inherit DJANGO_SETTINGS_MODULE (Celery would set Django up in their workers).
    """
    import django

    folder = tmp_path_factory.mktemp("shop_in_process")
    names = shop_environment(shop_database.rsplit("/", 1)[1], folder)
    wanted = ("DJANGO_SETTINGS_MODULE", "SHOP_DB_NAME", "SHOP_BROKER_URL", "TEST_DATA_TASKS")
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update({name: names[name] for name in wanted})
    sys.path.insert(0, str(SHOP))
    try:
        django.setup()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return shop_database


@dataclass
class Shop:
    """The shop of one test: its database emptied of customers and records, a task folder."""

    url: str
    tasks_dir: Path
    log_dir: Path
    engine: Engine
    extra_env: dict[str, str] = field(default_factory=dict)
    # Every worker the test started: the fixture kills those still alive at its end.
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def database(self) -> str:
        """The PostgreSQL database's name."""
        return self.url.rsplit("/", 1)[1]

    def data_tasks(self) -> dict[str, Any]:
        """The DATA_TASKS setting the shop's processes get (the shop's own, then the tests')."""
        return {"CELERY_APP": "shop.celery:app", **json.loads(self.env()["TEST_DATA_TASKS"])}

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of the shop's processes."""
        return shop_environment(self.database, self.tasks_dir, **{**self.extra_env, **extra})

    def add_task(self, name: str) -> None:
        """Copy a fixture task file into the project-level folder."""
        shutil.copy(FIXTURES / name, self.tasks_dir / name)

    def manage(
        self, *args: str, timeout: float = 120, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`python manage.py ARGS` in the shop's folder (with `env` added to its environment)."""
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=SHOP,
            env=self.env(**dict(env or {})),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def worker(self, **extra_env: str) -> WorkerProcess:
        """`celery -A shop worker -Q data_tasks`, started (not waited for)."""
        settings = Settings(database_url="", redis_url=REDIS_URL, tasks_dir=self.tasks_dir)
        worker = WorkerProcess(
            settings,
            self.log_dir,
            app="shop",
            cwd=SHOP,
            extra_env=self.env(**extra_env),
            extra_args=["-Q", "data_tasks"],
        )
        self.workers.append(worker)
        return worker

    def add_customers(self, count: int) -> None:
        """Customers with lower-case emails already normalized, and empty notes."""
        with self.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO accounts_customer (email, email_normalized, note) "
                    "SELECT 'c' || g || '@example.com', 'c' || g || '@example.com', '' "
                    "FROM generate_series(1, :n) AS g"
                ),
                {"n": count},
            )

    def notes(self) -> Counter[str]:
        """How many customers have each note."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                text("SELECT note, count(*) FROM accounts_customer GROUP BY 1")
            )
            return Counter({note: count for note, count in rows})

    def record(self, version: str) -> Mapping[str, Any]:
        """A task's record as stored (empty before its first enqueue)."""
        with self.engine.connect() as connection:
            row = (
                connection.execute(
                    text("SELECT * FROM task_records WHERE version = :v"), {"v": version}
                )
                .mappings()
                .first()
            )
            return dict(row) if row else {}

    def lane(self, version: str) -> dict[str, Any]:
        """A one-lane task's lane as stored (empty before its first run)."""
        with self.engine.connect() as connection:
            row = (
                connection.execute(
                    text("SELECT * FROM task_lanes WHERE version = :v"), {"v": version}
                )
                .mappings()
                .first()
            )
            return dict(row) if row else {}

    def status(self, version: str) -> str | None:
        """A task's status."""
        return self.record(version).get("status")

    def wait_status(self, version: str, *statuses: str, timeout: float = 90) -> str:
        """Wait until the task reaches one of the statuses."""
        return str(
            wait_for(lambda: self.status(version) in statuses and self.status(version), timeout)
        )

    def sweep_until_done(self, version: str, timeout: float = 90) -> None:
        """Run the deploy hook (the sweep's pass) until the task has succeeded."""

        def done() -> bool:
            if self.status(version) == "succeeded":
                return True
            self.manage("data_tasks", "enqueue", "--quiet")
            return self.status(version) == "succeeded"

        wait_for(done, timeout, interval=1.0)


@pytest.fixture
def shop(shop_database: str, redis_client: Any, tmp_path: Path) -> Iterator[Shop]:
    """The shop with no customers and no records, a flushed Redis and an empty task folder."""
    engine = make_engine(shop_database)
    with engine.begin() as connection:
        connection.execute(
            text(
                "TRUNCATE accounts_customer, task_records, task_lanes, task_history "
                "RESTART IDENTITY"
            )
        )
    folder = tmp_path / "data_migrations"
    folder.mkdir()
    made = Shop(shop_database, folder, tmp_path, engine)
    yield made
    for worker in made.workers:
        if worker.alive:
            worker.kill()
    engine.dispose()
