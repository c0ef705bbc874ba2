"""The deploy hook on a large task directory: wall time, database queries, Redis round trips."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from redis.connection import AbstractConnection
from sqlalchemy import Engine, event, text

from bench.config import Config
from bench.data import ONE_SHOT_SOURCE
from bench.figures import Figure, median
from bench.services import REPO, Services

IMPORTS = "import celery, sqlalchemy, redis"
# The first version of the directory with pending tasks, and of the one with nothing new.
PENDING_BASE = 20200101000000
IDLE_BASE = 20190101000000
# A task file that is done is never imported, so its body does not matter.
DONE_SOURCE = '"""Benchmark: a data task recorded as done long ago."""\n'


def prepare(services: Services, files: int, pending: int, base: int = PENDING_BASE) -> Path:
    """A directory of `files` task files whose first `files - pending` are recorded as done.

    Versions count up from `base`; records of other bases are left alone (done, fileless, they
    cost the hook nothing but a row read).
    """
    folder = services.work_dir / f"hook_{base}_{files}_{pending}"
    folder.mkdir(exist_ok=True)
    versions = [f"{base + index:014d}" for index in range(files)]
    for index, version in enumerate(versions):
        done = index < files - pending
        source = DONE_SOURCE if done else ONE_SHOT_SOURCE
        (folder / f"{version}_bench_hook_{index}.py").write_text(source)
    with services.engine.begin() as connection:
        connection.execute(
            text("DELETE FROM task_records WHERE version = ANY(:v)"), {"v": versions}
        )
        connection.execute(
            text(
                "INSERT INTO task_records (version, name, status, epoch, processed, attempts, "
                "created_at, finished_at) VALUES (:v, :n, 'succeeded', 1, 1, 0, now(), now())"
            ),
            [
                {"v": version, "n": f"bench_hook_{index}"}
                for index, version in enumerate(versions[: files - pending])
            ],
        )
    return folder


def forget_pending(services: Services, pending: int, files: int) -> None:
    """Make the pending ones new again, and drop the jobs published for them (no worker runs)."""
    versions = [f"{PENDING_BASE + index:014d}" for index in range(files - pending, files)]
    with services.engine.begin() as connection:
        connection.execute(
            text("DELETE FROM task_records WHERE version = ANY(:v)"), {"v": versions}
        )
    services.redis.delete(services.settings.queue)


def wall_time(command: list[str], env: dict[str, str]) -> float:
    """Seconds a command takes, from spawn to exit."""
    began = time.monotonic()
    subprocess.run(command, env=env, cwd=REPO, check=True, capture_output=True, timeout=120)
    return time.monotonic() - began


@contextmanager
def counting() -> Iterator[dict[str, Any]]:
    """Count SQL statements sent by any engine and Redis commands sent on any connection."""
    counts: dict[str, Any] = {"queries": 0, "record_queries": 0, "round_trips": 0, "sql": []}
    original: Callable[..., None] = AbstractConnection.send_packed_command

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        counts["queries"] += 1
        counts["sql"].append(" ".join(statement.split())[:90])
        if "FROM task_records" in statement and statement.lstrip().upper().startswith("SELECT"):
            counts["record_queries"] += 1

    def send(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        # One packed send is one round trip: a pipeline sends all its commands at once.
        counts["round_trips"] += 1
        original(self, command, check_health)

    event.listen(Engine, "before_cursor_execute", on_execute)
    AbstractConnection.send_packed_command = send  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        AbstractConnection.send_packed_command = original  # type: ignore[method-assign]
        event.remove(Engine, "before_cursor_execute", on_execute)


def count_in_process(services: Services, folder: Path) -> dict[str, Any]:
    """Run the deploy hook's pass in this process and count what it sends."""
    from data_tasks.publisher import CeleryPublisher
    from data_tasks.runtime import Runtime
    from data_tasks.scheduler import enqueue

    settings = services.settings.with_(tasks_dir=folder)
    publisher = CeleryPublisher(services.celery_app(), settings.queue)
    with counting() as counts:
        runtime = Runtime.build(
            settings, publisher, connect_timeout=settings.connect_timeout_seconds
        )
        try:
            enqueue(runtime)
        finally:
            runtime.close()
    return counts


def run(services: Services, config: Config) -> list[Figure]:
    """Time the hook against bare imports, then count its queries and round trips."""
    files, pending = config.hook_files, config.hook_pending
    folder = prepare(services, files, pending)
    idle = prepare(services, files, 0, IDLE_BASE)
    hook = [sys.executable, "-m", "deploy_hooks.enqueue", "--quiet"]
    commands = {
        "idle": (hook, services.environment(DATA_TASKS_DIR=str(idle))),
        "pending": (hook, services.environment(DATA_TASKS_DIR=str(folder))),
        "imports": ([sys.executable, "-c", IMPORTS], services.environment()),
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    names = list(commands)
    # Round 0 warms the page cache and the bytecode of all three, as a deploy of a built
    # release finds them, and is thrown away; then the order rotates from round to round.
    for repetition in range(config.hook_repetitions + 1):
        shift = repetition % len(names)
        for name in names[shift:] + names[:shift]:
            seconds = wall_time(*commands[name])
            forget_pending(services, pending, files)
            if repetition:
                times[name].append(seconds)
    idle_ratios = [h / i for h, i in zip(times["idle"], times["imports"], strict=True)]
    pending_ratios = [h / i for h, i in zip(times["pending"], times["imports"], strict=True)]

    small = max(10, files // 10)
    # Once first, so that what is counted is every deploy's cost, not this process's first
    # connection to the broker (the hook's own process pays that one in its wall time above).
    count_in_process(services, folder)
    forget_pending(services, pending, files)
    counts = {
        "many_files": count_in_process(services, folder),
    }
    forget_pending(services, pending, files)
    counts["few_files"] = count_in_process(services, prepare(services, small, pending))
    forget_pending(services, pending, small)
    counts["one_pending"] = count_in_process(services, prepare(services, files, 1))
    forget_pending(services, 1, files)
    services.clear_tasks()

    many, few, one = counts["many_files"], counts["few_files"], counts["one_pending"]
    extra_round_trips = (many["round_trips"] - one["round_trips"]) / max(1, pending - 1)
    summary = {
        name: {k: v for k, v in value.items() if k != "sql"} for name, value in counts.items()
    }
    return [
        Figure(
            "hook_vs_imports",
            f'deploy hook, {files:,} files, nothing new, vs `python -c "{IMPORTS}"`',
            median(idle_ratios),
            "x time",
            1.5,
            "max",
            f"hook {median(times['idle']) * 1000:.0f} ms, "
            f"imports {median(times['imports']) * 1000:.0f} ms",
            idle_ratios,
            {"seconds": times},
        ),
        Figure(
            "hook_pending_vs_imports",
            f"deploy hook, {files:,} files, {pending} new to publish, vs the same imports",
            median(pending_ratios),
            "x time",
            None,
            "max",
            f"hook {median(times['pending']) * 1000:.0f} ms",
            pending_ratios,
            {"seconds": times},
        ),
        Figure(
            "hook_queries",
            f"deploy hook database queries, {small:,} -> {files:,} files",
            many["queries"] / few["queries"],
            "x queries",
            1.0,
            "max",
            f"{few['queries']} -> {many['queries']} queries, "
            f"{many['record_queries']} reading task_records",
            [],
            {"counts": summary, "statements": many["sql"]},
        ),
        Figure(
            "hook_round_trips",
            f"deploy hook Redis round trips per pending task, 1 -> {pending} pending",
            extra_round_trips,
            "round trips",
            None,
            "max",
            f"{one['round_trips']} -> {many['round_trips']} round trips; "
            f"{few['round_trips']} with {small:,} files",
            [],
            {"counts": summary},
        ),
    ]
