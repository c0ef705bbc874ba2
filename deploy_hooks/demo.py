"""`python -m deploy_hooks.demo` (`make demo`): the sample tasks on SQLite and an embedded Redis.

Sets up `.demo/` with a SQLite database holding the sample app's tables and the task
records, starts a Redis and real celery workers, runs the deploy hook, shows the tasks'
progress until they finish, checks the data, and stops everything it started.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import IO, cast

from sqlalchemy import Engine

from data_tasks.database import make_engine
from data_tasks.overview import TaskView, overview
from data_tasks.records import create_tables
from deploy_hooks.embedded_redis import KINDS, EmbeddedRedis, EmbeddedRedisUnavailable, Kind
from deploy_hooks.formatting import format_table

REPO = Path(__file__).resolve().parent.parent
DEMO_DIR = REPO / ".demo"
# Relative to the repository, as in the Procfile: the workers run from there.
TASKS_DIR = Path("tasks")
FINISHED = frozenset({"succeeded", "failed", "skipped", "cancelled"})
REFRESH_SECONDS = 0.5

SCHEMA = """
CREATE TABLE plans (
    code TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    monthly_cents INTEGER NOT NULL
);
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL,
    email_normalized TEXT,
    email_domain TEXT,
    backfill_runs INTEGER NOT NULL DEFAULT 0
);
"""
# Untidy emails (padding, mixed case) so that normalizing them changes something visible.
SEED_USERS = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :rows)
INSERT INTO users (id, email)
SELECT i, '  User' || i || '@' || CASE i % 4
    WHEN 0 THEN 'Example.COM' WHEN 1 THEN 'mail.Example.org'
    WHEN 2 THEN 'CORP.example.net' ELSE 'example.io' END || ' '
FROM n
"""


class Interrupted(Exception):
    """SIGTERM or Ctrl-C: stop what was started, then exit."""


def say(line: str = "") -> None:
    """Print a line now, even when the output is a pipe."""
    print(line, flush=True)


def shown(path: Path) -> str:
    """A path as the reader knows it: relative to the repository when inside it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The demo's options."""
    parser = argparse.ArgumentParser(prog="python -m deploy_hooks.demo", description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000, help="users to seed (200000)")
    parser.add_argument("--workers", type=int, default=2, help="celery worker processes (2)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the logs of earlier runs (the database is new)"
    )
    parser.add_argument(
        "--dir", type=Path, default=DEMO_DIR, help="the demo's folder (.demo in the repository)"
    )
    parser.add_argument(
        "--redis",
        choices=KINDS,
        default=os.environ.get("DEMO_REDIS", "auto"),
        help="which embedded Redis to start (auto: the first that works; env DEMO_REDIS)",
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for the tasks (600)"
    )
    args = parser.parse_args(argv)
    if args.rows < 1 or args.workers < 1:
        parser.error("--rows and --workers must be at least 1")
    return args


def fresh_database(demo_dir: Path, keep: bool) -> Path:
    """An empty demo.db in the folder; without --keep the old logs go too."""
    demo_dir.mkdir(parents=True, exist_ok=True)
    path = demo_dir / "demo.db"
    leftovers = [path, path.with_name("demo.db-wal"), path.with_name("demo.db-shm")]
    if not keep:
        # Only what the demo writes: --dir may name a folder that holds other things.
        leftovers += [*demo_dir.glob("worker*.log"), demo_dir / "redis.log"]
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)
    return path


def seed(path: Path, rows: int) -> None:
    """Create the sample app's tables and its users, in one statement (a recursive CTE)."""
    connection = sqlite3.connect(path)
    try:
        # WAL is a property of the file: set once here, before any other process opens it.
        connection.execute("PRAGMA journal_mode=WAL")
        connection.executescript(SCHEMA)
        with connection:
            connection.execute(SEED_USERS, {"rows": rows})
    finally:
        connection.close()


def environment(database_url: str, redis_url: str) -> dict[str, str]:
    """What the workers and the deploy hook run with: the demo's database, Redis and tasks."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        DATA_TASKS_DIR=str(TASKS_DIR),
        PYTHONUNBUFFERED="1",
    )
    return env


class Worker:
    """One `celery -A worker worker` process, its output in a log file."""

    def __init__(self, number: int, env: dict[str, str], log_dir: Path) -> None:
        self.name = f"demo{number}@%h"
        self.log_path = log_dir / f"worker{number}.log"
        self._log: IO[bytes] = self.log_path.open("ab")
        command = [
            sys.executable,
            *("-m", "celery", "-A", "worker", "worker"),
            *("--loglevel=INFO", "--concurrency=1", "-n", self.name),
            # Nothing to synchronise with in a demo; mingle alone costs a second at start.
            *("--without-gossip", "--without-mingle"),
        ]
        # A session of its own: Ctrl-C reaches only the demo, which then stops workers in order.
        self.process = subprocess.Popen(
            command,
            env=env,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        """What the worker logged so far."""
        return self.log_path.read_text(errors="replace")

    @property
    def ready(self) -> bool:
        """True once the worker consumes its queue."""
        return "ready." in self.log()

    @property
    def exited(self) -> bool:
        """True when the worker's main process has ended."""
        return self.process.poll() is not None

    def terminate(self) -> None:
        """Ask for a warm shutdown: the batch in flight finishes first."""
        if not self.exited:
            self.process.terminate()

    def wait(self, timeout: float) -> None:
        """Wait for the worker to end; kill it and its pool when it does not."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()
        self._log.close()


def start_workers(
    count: int, env: dict[str, str], log_dir: Path, timeout: float = 60.0
) -> list[Worker]:
    """Start the workers and wait until each is ready (a failed start raises)."""
    workers: list[Worker] = []
    try:
        for number in range(1, count + 1):
            workers.append(Worker(number, env, log_dir))
        deadline = time.monotonic() + timeout
        while not all(worker.ready for worker in workers):
            for worker in workers:
                if worker.exited:
                    raise RuntimeError(f"a worker exited at start; see {worker.log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers not ready within {timeout:.0f}s; see {log_dir}")
            time.sleep(0.1)
    except BaseException:
        stop_workers(workers)
        raise
    return workers


def stop_workers(workers: Sequence[Worker], timeout: float = 30.0) -> None:
    """Warm-shut all workers down at once, then wait for each."""
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.wait(timeout)


def run_hook(env: dict[str, str]) -> tuple[int, str, float]:
    """Run the deploy hook as a deploy would; its exit code, output and wall time."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "deploy_hooks.enqueue"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout, time.monotonic() - started


def all_finished(views: Sequence[TaskView]) -> bool:
    """True when every task has finished, or a failure leaves the rest waiting for ever."""
    statuses = [view.record.status for view in views]
    if all(status in FINISHED for status in statuses):
        return True
    # A failed task blocks its dependents: once nothing is in flight, nothing will move.
    return "failed" in statuses and not any(view.record.state.is_in_flight for view in views)


class Display:
    """Redraws the status table in place on a terminal; prints status changes to a pipe."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.tty = sys.stdout.isatty()
        self.lines = 0
        self.seen: dict[str, str] = {}

    def show(self, views: Sequence[TaskView]) -> None:
        """Show the current state."""
        if self.tty:
            # A wrapped line would throw off the count of lines to erase: cut at the width.
            width = shutil.get_terminal_size().columns - 1
            table = "\n".join(line[:width] for line in format_table(views).splitlines())
            erase = f"\x1b[{self.lines}F\x1b[J" if self.lines else ""
            sys.stdout.write(erase + table + "\n")
            sys.stdout.flush()
            self.lines = table.count("\n") + 1
            return
        elapsed = time.monotonic() - self.started
        for view in views:
            record = view.record
            if self.seen.get(record.version) != record.status:
                self.seen[record.version] = record.status
                say(f"  {elapsed:6.1f}s  {record.version} {record.name} {record.status}")


def watch(
    engine: Engine, workers: Sequence[Worker], timeout: float, started: float
) -> list[TaskView]:
    """Show progress until every task has finished; raises when a worker dies or time runs out."""
    display = Display(started)
    deadline = time.monotonic() + timeout
    while True:
        views = overview(engine, REPO / TASKS_DIR)
        display.show(views)
        if all_finished(views):
            return views
        for worker in workers:
            if worker.exited:
                raise RuntimeError(f"a worker died; see {worker.log_path}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the tasks did not finish within {timeout:.0f}s")
        time.sleep(REFRESH_SECONDS)


def verify(path: Path, rows: int) -> list[str]:
    """What is wrong with the sample data after the tasks ran (nothing, when they worked)."""
    connection = sqlite3.connect(path)
    try:
        users, not_once, no_domain, wrong = connection.execute(
            "SELECT count(*), "
            "coalesce(sum(backfill_runs != 1), 0), "
            "coalesce(sum(email_domain IS NULL), 0), "
            "coalesce(sum(email_normalized IS NOT lower(trim(email))), 0) FROM users"
        ).fetchone()
        plans = connection.execute("SELECT count(*) FROM plans").fetchone()[0]
    finally:
        connection.close()
    problems = []
    if users != rows:
        problems.append(f"{users:,} users instead of {rows:,}")
    if not_once:
        problems.append(f"{not_once:,} users not backfilled exactly once")
    if no_domain:
        problems.append(f"{no_domain:,} users without email_domain")
    if wrong:
        problems.append(f"{wrong:,} users with a wrong email_normalized")
    if plans != 3:
        problems.append(f"{plans} plans instead of 3")
    return problems


def domain_counts(path: Path) -> str:
    """Users per email domain, as the last task left them."""
    connection = sqlite3.connect(path)
    try:
        rows = connection.execute(
            "SELECT email_domain, count(*) FROM users GROUP BY 1 ORDER BY 2 DESC, 1"
        ).fetchall()
    finally:
        connection.close()
    return ", ".join(f"{domain} {count:,}" for domain, count in rows)


def rates(views: Sequence[TaskView]) -> list[str]:
    """Rows per second of each batched task, from its first claim to its success."""
    lines = []
    for view in views:
        record = view.record
        if record.started_at is None or record.finished_at is None or record.processed < 2:
            continue
        seconds = (record.finished_at - record.started_at).total_seconds()
        if seconds > 0:
            lines.append(
                f"  {record.name}: {record.processed:,} rows in {seconds:.2f}s = "
                f"{record.processed / seconds:,.0f} rows/s"
            )
    return lines


@contextmanager
def interruptible() -> Iterator[None]:
    """Turn SIGTERM into an exception, so that a stopped demo still stops what it started."""

    def handle(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Let the clean-up finish: it is bounded, and a second Ctrl-C would orphan processes."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(args: argparse.Namespace, started: float) -> bool:
    """The demo proper; True when every task succeeded and the data is right."""
    demo_dir = args.dir.resolve()
    db_path = fresh_database(demo_dir, args.keep)
    database_url = f"sqlite:///{db_path}"
    say(f"demo: SQLite {shown(db_path)} for the task records and the sample app")
    seeding = time.monotonic()
    seed(db_path, args.rows)
    say(f"  seeded {args.rows:,} users in {time.monotonic() - seeding:.2f}s")
    engine = make_engine(database_url)
    workers: list[Worker] = []
    try:
        # Made once here rather than raced by the first worker and the deploy hook.
        create_tables(engine)
        redis_log = demo_dir / "redis.log"
        with EmbeddedRedis(cast(Kind, args.redis), log_path=redis_log) as server:
            say(f"redis: {server.description} at {server.url}")
            env = environment(database_url, server.url)
            starting = time.monotonic()
            try:
                workers = start_workers(args.workers, env, demo_dir)
                logs = ", ".join(shown(worker.log_path) for worker in workers)
                say(
                    f"workers: {len(workers)} celery workers ready in "
                    f"{time.monotonic() - starting:.1f}s (logs: {logs})"
                )
                say("deploy hook: python -m deploy_hooks.enqueue")
                code, output, seconds = run_hook(env)
                for line in output.splitlines():
                    say(f"  {line}")
                say(f"  exit {code}, {seconds:.2f}s wall time including Python's start-up")
                if code != 0:
                    return False
                say("progress:")
                views = watch(engine, workers, args.timeout, started)
            finally:
                with uninterrupted():
                    stopping = time.monotonic()
                    stop_workers(workers)
                    if workers:
                        seconds = time.monotonic() - stopping
                        say(f"workers stopped (warm shutdown) in {seconds:.1f}s; stopping Redis")
        say()
        say("final status:")
        say(format_table(views))
        say()
        succeeded = all(view.record.status == "succeeded" for view in views)
        problems = verify(db_path, args.rows)
        if problems:
            say("data check FAILED: " + "; ".join(problems))
        else:
            say(
                f"data check: all {args.rows:,} users backfilled exactly once, "
                "emails normalized, domains set, 3 plans"
            )
            say(f"  users by domain: {domain_counts(db_path)}")
        say("rates:")
        for line in rates(views):
            say(line)
        return succeeded and not problems
    finally:
        engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; 0 when every task succeeded and the data checks out."""
    args = parse_args(argv)
    started = time.monotonic()
    try:
        with interruptible():
            passed = run(args, started)
    except (KeyboardInterrupt, Interrupted):
        say("\ninterrupted; everything the demo started is stopped")
        return 130
    except (EmbeddedRedisUnavailable, RuntimeError) as error:
        say(f"demo FAILED: {error}")
        return 1
    say(f"demo {'passed' if passed else 'FAILED'} in {time.monotonic() - started:.1f}s")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
