"""What the fault tests share: the workload, record reads, the queue, a private Redis."""

from __future__ import annotations

import base64
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Engine, Select, func, inspect, select, text

from data_tasks.lanes import TaskLane
from data_tasks.records import TaskRecord
from data_tasks.settings import Settings
from tests.conftest import copy_tasks
from tests.items import applied_counts, create_items
from tests.processes import WorkerProcess, run_hook, wait_for

# At least this many rows, so that a row applied twice or never shows up as a count of 2 or 0.
ROWS = 100_000
SLOW_FILE = "20250901000000_faulty_slow_count.py"
SLOW = "20250901000000"
MIDWAY_FILE = "20250901000100_faulty_fails_midway.py"
MIDWAY = "20250901000100"
DEPENDENT_FILE = "20250901000200_faulty_dependent.py"
DEPENDENT = "20250901000200"
# The workload's shapes (the fixture task's FAULTY_SHAPE), and how a case's row names them: a
# keyset backfill, whose plan is folded into its fence, and a row iteration, which reads each
# page, fences it and writes it back; on PostgreSQL each sends its next BEGIN with its COMMIT.
SHAPES = {"keyset": "keyset backfill", "rows": "row iteration"}


def fault_settings(settings: Settings) -> Settings:
    """Short budgets, so that many chunks, stale runs and expired locks happen in seconds."""
    return settings.with_(
        chunk_seconds=1.0, stale_seconds=3.0, lock_seconds=2.0, batch_idle_seconds=3.0
    )


def backfill(settings: Settings, engine: Engine, rows: int = ROWS) -> None:
    """The workload: `rows` items at 0 and the slow counting backfill in the task folder."""
    create_items(engine, rows)
    copy_tasks(settings.tasks_dir, SLOW_FILE)


def backfill_running(
    settings: Settings, engine: Engine, workers: list[WorkerProcess], directory: Path
) -> WorkerProcess:
    """The workload, enqueued by the deploy hook, and a worker started and ready to run it."""
    backfill(settings, engine)
    hook_ok(settings)
    worker = WorkerProcess(settings, directory)
    workers.append(worker)
    worker.wait_ready()
    return worker


def _record_query(version: str) -> Select[Any]:
    """The record, with the live state of its first lane: the fault workload runs as one lane,
    whose epoch is bumped by every chunk that starts it. (Built with SQLAlchemy: `cursor` is a
    reserved word that MySQL and MariaDB need quoted.)"""
    r, lane = TaskRecord.__table__, TaskLane.__table__
    overridden = ("epoch", "processed", "total", "heartbeat_at")
    return (
        select(
            *[c for c in r.c if c.key not in overridden],
            r.c.epoch.label("run_epoch"),
            lane.c.status.label("lane_status"),
            func.coalesce(lane.c.epoch, 0).label("epoch"),
            lane.c.cursor.label("cursor"),
            func.coalesce(lane.c.processed, r.c.processed).label("processed"),
            func.coalesce(lane.c.total, r.c.total).label("total"),
            func.coalesce(lane.c.heartbeat_at, r.c.heartbeat_at).label("heartbeat_at"),
        )
        .select_from(r.outerjoin(lane, (lane.c.version == r.c.version) & (lane.c.lane == 0)))
        .where(r.c.version == version)
    )


def record(engine: Engine, version: str) -> dict[str, Any]:
    """A version's task record with its lane 0's epoch, cursor, progress and total (empty: none)."""
    with engine.connect() as connection:
        tables = inspect(connection)
        if not (tables.has_table("task_records") and tables.has_table("task_lanes")):
            return {}
        found = connection.execute(_record_query(version)).mappings().first()
    return dict(found) if found is not None else {}


def age(timestamp: datetime) -> float:
    """Seconds since a timestamp read with plain SQL: aware on PostgreSQL, naive UTC elsewhere."""
    if timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=UTC)
    return (datetime.now(UTC) - timestamp).total_seconds()


def status(engine: Engine, version: str) -> str | None:
    """A version's status, None when it has no record."""
    return record(engine, version).get("status")


def wait_status(engine: Engine, version: str, *wanted: str, timeout: float = 90.0) -> str:
    """Wait until the record reaches one of the statuses."""

    def reached() -> str:
        found = status(engine, version)
        return found if found in wanted and found is not None else ""

    return wait_for(reached, timeout=timeout, interval=0.2)


def wait_progress(engine: Engine, version: str, beyond: int, timeout: float = 90.0) -> int:
    """Wait until the record has processed more than `beyond` rows; returns how many."""
    return int(
        wait_for(
            lambda: (
                (record(engine, version).get("processed") or 0) > beyond
                and record(engine, version)["processed"]
            ),
            timeout=timeout,
            interval=0.05,
        )
    )


def wait_epoch(engine: Engine, version: str, above: int, timeout: float = 60.0) -> int:
    """Wait until the record's epoch is above `above` (someone claimed it again)."""
    return int(
        wait_for(
            lambda: (
                (record(engine, version).get("epoch") or 0) > above
                and record(engine, version)["epoch"]
            ),
            timeout=timeout,
            interval=0.1,
        )
    )


def hook_ok(settings: Settings, **extra: str) -> str:
    """Run the deploy hook and require exit 0; returns what it printed."""
    result = run_hook(settings, **extra)
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def wait_reclaimable(settings: Settings, engine: Engine, version: str) -> None:
    """Wait until a dead run is stale: its heartbeat old and its lease gone from Redis."""
    client = redis.Redis.from_url(settings.redis_url)
    try:

        def ready() -> bool:
            found = record(engine, version)
            if found.get("lane_status") != "running" or found.get("heartbeat_at") is None:
                return False
            lease = f"{settings.key_prefix}:lease:{version}:0"
            return age(found["heartbeat_at"]) > settings.stale_seconds and not client.exists(lease)

        wait_for(ready, timeout=60, interval=0.2)
    finally:
        client.close()


def exactly_once(engine: Engine, rows: int = ROWS) -> dict[int, int]:
    """Every row's counter is 1: none applied twice, none lost."""
    counts = applied_counts(engine)
    assert counts == {1: rows}, f"applied counts {counts}: want every one of {rows} rows at 1"
    return counts


def untouched(engine: Engine, rows: int = ROWS) -> None:
    """No row was applied at all."""
    counts = applied_counts(engine)
    assert counts == {0: rows}, f"applied counts {counts}: want every one of {rows} rows at 0"


def queued_messages(client: redis.Redis, queue: str = "data_tasks") -> list[dict[str, Any]]:
    """The chunk job kwargs waiting in a Celery queue on Redis (oldest first)."""
    messages = []
    for raw in reversed(client.lrange(queue, 0, -1)):
        envelope = json.loads(raw)
        body = json.loads(base64.b64decode(envelope["body"]))
        messages.append({"task": envelope["headers"]["task"], **body[1]})
    return messages


def log_lines(text_: str, *needles: str) -> list[str]:
    """The lines of a log that contain every needle."""
    return [line for line in text_.splitlines() if all(n in line for n in needles)]


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A throw-away redis-server of the test's own, in memory only, that it may stop at will."""

    def __init__(self, directory: Path, password: str | None = None) -> None:
        self.port = free_port()
        self.directory = directory
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its URL, database 0."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        """Start it empty and wait until it answers."""
        command = ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        command += ["--bind", "127.0.0.1", "--dir", str(self.directory)]
        if self.password:
            command += ["--requirepass", self.password]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_for(answers, timeout=20)
        client.close()
        return self

    def kill(self) -> None:
        """SIGKILL it: the queue, the locks and the markers are gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None


@contextmanager
def private_redis(directory: Path, password: str | None = None) -> Iterator[PrivateRedis]:
    """A started PrivateRedis, killed at the end."""
    server = PrivateRedis(directory, password).start()
    try:
        yield server
    finally:
        server.kill()


def terminate_backends(engine: Engine) -> int:
    """pg_terminate_backend every other connection to the engine's database; returns how many."""
    with engine.connect() as connection:
        killed = connection.execute(
            text(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
        connection.commit()
    return int(killed)


def stuck(settings: Settings, engine: Engine, version: str) -> bool:
    """True when nothing will move the task without a sweep: its job or its runner is gone."""
    found = record(engine, version)
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=1)
    try:
        prefix = settings.key_prefix
        if found.get("status") not in ("enqueued", "running"):
            return False
        if found.get("lane_status") == "enqueued":
            marker = client.get(f"{prefix}:queued:{version}:0")
            return marker is None or int(marker) != found["epoch"]
        if found.get("lane_status") == "running":
            return age(found["heartbeat_at"]) > settings.stale_seconds and not client.exists(
                f"{prefix}:lease:{version}:0"
            )
        return False
    except redis.RedisError:
        return False
    finally:
        client.close()


def sweep_until(
    settings: Settings,
    engine: Engine,
    version: str,
    until: Callable[[dict[str, Any]], bool] | None = None,
    timeout: float = 120,
) -> int:
    """Wait until the record satisfies `until` (default: succeeded), sweeping when it is stuck.

    Returns how many sweeps it took: what a cron or celery beat sweep would have done.
    """
    sweeps = 0

    def done() -> bool:
        nonlocal sweeps
        found = record(engine, version)
        if until(found) if until is not None else found.get("status") == "succeeded":
            return True
        if stuck(settings, engine, version):
            hook_ok(settings)
            sweeps += 1
        return False

    wait_for(done, timeout=timeout, interval=0.3)
    return sweeps


# The README's bound: whatever the services do, the deploy hook and the commands return
# within their own start-up plus this (10 s in all where start-up takes 1-2 s).
FAULT_BOUND_SECONDS = 7.0


def within_bound(module: str = "deploy_hooks.enqueue", processes: int = 1) -> float:
    """The start-up time of the hook (or the commands) here and now, plus FAULT_BOUND_SECONDS.

    `--help` imports everything the command imports and touches no service: on a loaded
    machine the bound grows with the start-up, not with what a fault costs. `processes`
    start together, as the test's own processes will.
    """
    started = time.monotonic()
    helps = [
        subprocess.Popen([sys.executable, "-m", module, "--help"], stdout=subprocess.DEVNULL)
        for _ in range(processes)
    ]
    assert [help_.wait(timeout=60) for help_ in helps] == [0] * processes
    return time.monotonic() - started + FAULT_BOUND_SECONDS


def settle(seconds: float) -> None:
    """Let a fault take effect (never used in an assertion)."""
    time.sleep(seconds)
