"""Running chunk jobs in-process: what a worker would do with the messages a test published."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import text

from data_tasks.lanes import TaskLane
from data_tasks.publisher import ChunkMessage, RecordingPublisher
from data_tasks.records import TaskRecord
from data_tasks.runner import run_chunk
from data_tasks.runtime import Runtime
from data_tasks.scheduler import EnqueueReport, enqueue


def recording(runtime: Runtime) -> RecordingPublisher:
    """The runtime's publisher, which tests build as a recording one."""
    assert isinstance(runtime.publisher, RecordingPublisher)
    return runtime.publisher


def published(runtime: Runtime) -> list[ChunkMessage]:
    """The messages the runtime's recording publisher holds, oldest first."""
    return [message for message, _ in recording(runtime).messages]


def take(runtime: Runtime) -> list[ChunkMessage]:
    """The messages published so far, removed from the publisher (as a worker consumes them)."""
    messages = published(runtime)
    recording(runtime).messages.clear()
    return messages


def drain(runtime: Runtime, limit: int = 100_000) -> list[dict[str, Any]]:
    """Run each published message, and those its chunk publishes, until none is left."""
    publisher = recording(runtime)
    summaries: list[dict[str, Any]] = []
    while publisher.messages:
        assert len(summaries) < limit, "the chunks never stopped publishing successors"
        message, _countdown = publisher.messages.pop(0)
        summaries.append(run_chunk(runtime, message))
    return summaries


def enqueue_and_drain(runtime: Runtime) -> tuple[EnqueueReport, list[dict[str, Any]]]:
    """One deploy hook pass, then every chunk it led to."""
    report = enqueue(runtime)
    return report, drain(runtime)


def record(runtime: Runtime, version: str) -> TaskRecord:
    """The current record of a version, read fresh."""
    with runtime.session() as session:
        found = session.get(TaskRecord, version)
        assert found is not None, f"no record for {version}"
        return found


def lane(runtime: Runtime, version: str, number: int = 0) -> TaskLane:
    """The current state of one lane of a version, read fresh."""
    with runtime.session() as session:
        found = session.get(TaskLane, (version, number))
        assert found is not None, f"no lane {number} for {version}"
        return found


def meanwhile(runtime: Runtime, write: Callable[[], None], statement: str) -> threading.Thread:
    """Start `write` on another connection, as an operator or another worker would, while a
    chunk is between batches; return once it has run or waits on the chunk's open batch.

    On PostgreSQL a chunk asks whether to go on before its batch's COMMIT, which carries the
    next batch's plan: a write to the lane's row then waits for that COMMIT and lands before
    the next batch, as it would against a worker. `statement` is how the write's SQL starts.
    """
    thread = threading.Thread(target=write)
    thread.start()
    deadline = time.monotonic() + 30
    while thread.is_alive() and time.monotonic() < deadline:
        if runtime.engine.dialect.name == "postgresql":
            with runtime.engine.connect() as connection:
                waiting = connection.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE wait_event_type = 'Lock' AND query LIKE :statement"
                    ),
                    {"statement": f"{statement}%"},
                ).scalar_one()
            if waiting:
                return thread
        time.sleep(0.005)
    assert not thread.is_alive(), f"{statement}... neither ran nor waited on the batch's lock"
    return thread
