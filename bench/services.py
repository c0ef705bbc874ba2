"""The real services a benchmark runs on: its own PostgreSQL database, Redis, celery workers."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from data_tasks.database import make_engine, normalize_url
from data_tasks.schema import create_tables
from data_tasks.settings import Settings

REPO = Path(__file__).resolve().parent.parent
# The server the benchmark creates its own database on, and the Redis database it may flush.
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")
T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, interval: float = 0.05) -> T:
    """Poll until the predicate returns something truthy; raise TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value:
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s (last value {value!r})")
        time.sleep(interval)
        value = predicate()
    return value


class Worker:
    """A real `celery worker` process of the benchmark's app, logging to a file."""

    counter = itertools.count(1)

    def __init__(self, env: Mapping[str, str], log_dir: Path, concurrency: int) -> None:
        number = next(Worker.counter)
        self.name = f"bench{number}-{os.getpid()}@localhost"
        self.log_path = log_dir / f"worker{number}.log"
        self.concurrency = concurrency
        self._log = self.log_path.open("ab")
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.worker_app",
            "worker",
            "--loglevel=INFO",
            f"--concurrency={concurrency}",
            "--pool=prefork",
            "-n",
            self.name,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        self.process = subprocess.Popen(
            command,
            env=dict(env),
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60.0) -> Worker:
        """Block until the worker consumes, and its pool children are up."""
        wait_for(lambda: b"ready." in self.log_path.read_bytes() or not self.alive, timeout)
        if not self.alive:
            raise RuntimeError(f"worker exited:\n{self.log_path.read_text(errors='replace')}")
        wait_for(lambda: len(self.children()) >= self.concurrency, timeout)
        return self

    @property
    def alive(self) -> bool:
        """True while the main process runs."""
        return self.process.poll() is None

    def children(self) -> list[int]:
        """The pids of the pool's processes, which run the chunk jobs (Linux /proc)."""
        pid = self.process.pid
        try:
            return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            return []

    def peak_rss_bytes(self) -> int:
        """The highest resident set size any pool process has reached (VmHWM)."""
        peaks = [0]
        for child in self.children():
            status = Path(f"/proc/{child}/status").read_text()
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) * 1024)
        return max(peaks)

    def stop(self, timeout: float = 60.0) -> None:
        """Warm shutdown; SIGKILL the whole group if it hangs."""
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        self._log.close()


class Services:
    """One benchmark run's database, Redis database, task directory and workers."""

    def __init__(self, work_dir: Path, cache_bytecode: bool = True) -> None:
        self.work_dir = work_dir
        self.cache_bytecode = cache_bytecode
        self.tasks_dir = work_dir / "tasks"
        self.tasks_dir.mkdir(parents=True, exist_ok=True)
        self.database_name = f"bench_{os.getpid()}"
        self.admin_url = normalize_url(POSTGRES_URL)
        self.database_url = (
            make_url(self.admin_url)
            .set(database=self.database_name)
            .render_as_string(hide_password=False)
        )
        self.settings = Settings(
            database_url=self.database_url,
            redis_url=REDIS_URL,
            tasks_dir=self.tasks_dir,
            # A queue and keys of this run's own: other runs may share the Redis database.
            queue=f"bench_{os.getpid()}",
            key_prefix=f"bench_{os.getpid()}",
        )
        self._versions = itertools.count(1)
        self.workers: list[Worker] = []
        self._app: Any = None
        self._engine: Engine | None = None
        self.redis = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)

    def __enter__(self) -> Services:
        self._admin(f'DROP DATABASE IF EXISTS "{self.database_name}"')
        self._admin(f'CREATE DATABASE "{self.database_name}"')
        self.forget_redis_keys()
        create_tables(self.engine)
        return self

    def __exit__(self, *_: object) -> None:
        for worker in self.workers:
            worker.stop()
        if self._engine is not None:
            self._engine.dispose()
        self.forget_redis_keys()
        self.redis.close()
        self._admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{self.database_name}'"
        )
        self._admin(f'DROP DATABASE IF EXISTS "{self.database_name}"')

    def celery_app(self) -> Any:
        """A Celery app of this run's own (the module-level one may point elsewhere)."""
        if self._app is None:
            from worker.app import make_app

            self._app = make_app(self.settings)
        return self._app

    def forget_redis_keys(self) -> None:
        """Delete this run's keys: its queue, its bindings, its locks and markers."""
        queue, prefix = self.settings.queue, self.settings.key_prefix
        patterns = [f"{prefix}:*", f"{queue}*", f"_kombu.binding*.{queue}"]
        for pattern in patterns:
            keys = list(self.redis.scan_iter(match=pattern, count=1000))
            if keys:
                self.redis.delete(*keys)

    def _admin(self, sql: str) -> None:
        admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                connection.execute(text(sql))
        finally:
            admin.dispose()

    @property
    def engine(self) -> Engine:
        """The benchmark's own engine on its database."""
        if self._engine is None:
            self._engine = make_engine(self.database_url)
        return self._engine

    def address(self) -> tuple[str, int]:
        """The PostgreSQL server's host and port."""
        url = make_url(self.database_url)
        return url.host or "127.0.0.1", url.port or 5432

    def url_through(self, port: int) -> str:
        """The database URL with the server replaced by a local port (a proxy in front)."""
        url = make_url(self.database_url).set(host="127.0.0.1", port=port)
        return url.render_as_string(hide_password=False)

    def autocommit_engine(self) -> Engine:
        """An engine whose connections run outside a transaction (for CALL and VACUUM)."""
        return make_engine(self.database_url, isolation_level="AUTOCOMMIT")

    def environment(self, **extra: str) -> dict[str, str]:
        """The environment that points a subprocess at the benchmark's services."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DATA_TASKS_")}
        # Bytecode cached as on a deployed release (a build image or the first start writes
        # it), in a folder of this run's own, so no timed process pays for compiling. A quick
        # run, which times nothing that matters, skips the first compilation instead.
        if self.cache_bytecode:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(self.work_dir / "pycache")
        env.update(
            DATABASE_URL=self.database_url,
            REDIS_URL=REDIS_URL,
            DATA_TASKS_DIR=str(self.tasks_dir),
            DATA_TASKS_KEY_PREFIX=self.settings.key_prefix,
            DATA_TASKS_QUEUE=self.settings.queue,
            PYTHONPATH=str(REPO),
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env

    def next_version(self) -> str:
        """A fresh 14-digit version, so a worker never serves a cached task of an older run."""
        return f"{20300101000000 + next(self._versions) * 100:014d}"

    def clear_tasks(self) -> None:
        """Forget every task file and record, so the next run starts from nothing."""
        for path in self.tasks_dir.glob("*.py"):
            path.unlink()
        with self.engine.begin() as connection:
            connection.execute(text("DELETE FROM task_records"))

    def write_task(self, version: str, name: str, source: str) -> Path:
        """Write a task file into the benchmark's task directory."""
        path = self.tasks_dir / f"{version}_{name}.py"
        path.write_text(source)
        return path

    def start_worker(self, concurrency: int, **env: str) -> Worker:
        """Start a worker (with `env` changed) and wait until it consumes."""
        worker = Worker(self.environment(**env), self.work_dir, concurrency)
        self.workers.append(worker)
        return worker.wait_ready()

    @contextmanager
    def worker(self, concurrency: int, **env: str) -> Iterator[Worker]:
        """A worker for the duration of a block."""
        worker = self.start_worker(concurrency, **env)
        try:
            yield worker
        finally:
            worker.stop()
            self.workers.remove(worker)

    def run_hook(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """Run `python -m deploy_hooks.enqueue` as a deploy does."""
        result = subprocess.run(
            [sys.executable, "-m", "deploy_hooks.enqueue", *args],
            env=self.environment(**env),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"deploy hook failed ({result.returncode}): {result.stderr}")
        return result

    def start_hook(self, *args: str) -> subprocess.Popen[bytes]:
        """Spawn `python -m deploy_hooks.enqueue` and return at once."""
        return subprocess.Popen(
            [sys.executable, "-m", "deploy_hooks.enqueue", *args],
            env=self.environment(),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def run_loop(self, kind: str, batch: int, **env: str) -> tuple[float, float]:
        """Run a baseline as a script (see bench.loops): (wall seconds, seconds connected)."""
        began = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "bench.loops", kind, str(batch)],
            env=self.environment(**env),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=3600,
            check=True,
        )
        return time.monotonic() - began, float(result.stdout.split()[-1])

    def statuses(self) -> dict[str, str]:
        """Each version's status."""
        with self.engine.connect() as connection:
            rows = connection.execute(text("SELECT version, status FROM task_records"))
            return {str(version): str(status) for version, status in rows}

    def wait_succeeded(self, versions: list[str], timeout: float) -> tuple[datetime, datetime]:
        """Wait until every version succeeded; returns the first start and the last finish."""

        def done() -> bool:
            statuses = self.statuses()
            failed = [v for v in versions if statuses.get(v) in ("failed", "cancelled")]
            if failed:
                raise RuntimeError(f"data task(s) {failed} did not succeed; see {self.work_dir}")
            return all(statuses.get(v) == "succeeded" for v in versions)

        wait_for(done, timeout, interval=0.05)
        with self.engine.connect() as connection:
            started, finished = connection.execute(
                text(
                    "SELECT min(started_at), max(finished_at) FROM task_records "
                    "WHERE version = ANY(:versions)"
                ),
                {"versions": versions},
            ).one()
        return started.astimezone(UTC), finished.astimezone(UTC)


def utc_now() -> datetime:
    """Now, to compare with the records' timestamps written by workers on this machine."""
    return datetime.now(UTC)
