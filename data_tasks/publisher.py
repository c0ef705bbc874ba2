"""Chunk job messages and the small publisher the core hands them to."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from data_tasks.discovery import VERSION_PATTERN
from data_tasks.errors import InvalidMessage

# The one stable name of the generic chunk job; workers of every release know it.
JOB_NAME = "data_tasks.run_chunk"
# The periodic sweep (the deploy hook's pass), for celery beat.
SWEEP_JOB_NAME = "data_tasks.sweep"


@dataclass(frozen=True)
class ChunkMessage:
    """What a chunk job carries: ids only, never code, paths or objects."""

    version: str
    # The lane's epoch the job was published at: only one chunk can start from it.
    epoch: int
    # How often a worker that lacked the file has already passed this job on.
    unknown_retries: int = 0
    # Which lane of the task's run (0 for a task that runs as one lane).
    lane: int = 0

    def to_kwargs(self) -> dict[str, Any]:
        """The JSON-ready keyword arguments of the Celery job."""
        return asdict(self)

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> ChunkMessage:
        """Validate a received message; raises InvalidMessage naming what is wrong."""
        unexpected = sorted(set(kwargs) - {"version", "epoch", "unknown_retries", "lane"})
        if unexpected:
            raise InvalidMessage(f"chunk message has unexpected fields {unexpected}")
        version = kwargs.get("version")
        if not isinstance(version, str) or not VERSION_PATTERN.match(version):
            raise InvalidMessage(f"chunk message version {version!r} is not a 14-digit version")
        epoch = kwargs.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise InvalidMessage(f"chunk message epoch {epoch!r} is not a non-negative integer")
        retries = kwargs.get("unknown_retries", 0)
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise InvalidMessage(f"chunk message unknown_retries {retries!r} is not an integer")
        lane = kwargs.get("lane", 0)
        if not isinstance(lane, int) or isinstance(lane, bool) or lane < 0:
            raise InvalidMessage(f"chunk message lane {lane!r} is not a non-negative integer")
        return cls(version, epoch, retries, lane)


class Publisher(Protocol):
    """Hands chunk jobs to the broker."""

    def publish(self, message: ChunkMessage, countdown: float = 0.0) -> None:
        """Send one chunk job, to run after `countdown` seconds."""


class CeleryPublisher:
    """Publishes by the job's stable name through a Celery app, which the core never imports."""

    def __init__(self, app: Any, queue: str) -> None:
        self.app = app
        self.queue = queue

    def publish(self, message: ChunkMessage, countdown: float = 0.0) -> None:
        """send_task by name to the data task queue."""
        self.app.send_task(
            JOB_NAME,
            kwargs=message.to_kwargs(),
            queue=self.queue,
            countdown=countdown or None,
        )


class RecordingPublisher:
    """Keeps what it is given, for tests that count published jobs."""

    def __init__(self) -> None:
        self.messages: list[tuple[ChunkMessage, float]] = []

    def publish(self, message: ChunkMessage, countdown: float = 0.0) -> None:
        """Remember the message."""
        self.messages.append((message, countdown))
