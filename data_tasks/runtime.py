"""The connections a runner or a deploy hook works with, built once from the settings."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import Engine
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from data_tasks.coordination import Coordinator, connect
from data_tasks.database import COMMAND_TIMEOUTS as COMMAND_TIMEOUTS
from data_tasks.database import Timeouts, make_engine
from data_tasks.discovery import Catalog
from data_tasks.errors import InvalidUrl
from data_tasks.publisher import ChunkMessage, Publisher
from data_tasks.schema import create_tables
from data_tasks.settings import Settings, redact


def _never() -> bool:
    return False


@dataclass
class Runtime:
    """Settings, the records engine, Redis, the publisher and the task catalog, together."""

    settings: Settings
    engine: Engine
    coordinator: Coordinator
    publisher: Publisher
    catalog: Catalog
    hostname: str = field(default_factory=socket.gethostname)
    # Asked between batches: True when the process is being shut down.
    should_stop: Callable[[], bool] = _never
    # Told how a chunk is getting on (for Flower), at most about once a second.
    on_progress: Callable[[dict[str, Any]], None] | None = None
    # Told each named step between a claim and a lane's batches (tests stop a process there).
    on_step: Callable[[str], None] | None = None

    @classmethod
    def build(
        cls,
        settings: Settings,
        publisher: Publisher,
        hostname: str | None = None,
        connect_timeout: float | None = None,
        timeouts: Timeouts | None = None,
    ) -> Runtime:
        """Connect to everything the settings name (lazily: nothing is opened yet)."""
        # A URL that does not parse must not be echoed: the parsers quote pieces of its password.
        try:
            engine = make_engine(
                settings.database_url,
                connect_timeout=connect_timeout,
                # A batch idle in its transaction this long belongs to a frozen runner.
                idle_in_transaction_seconds=settings.batch_idle_seconds,
                timeouts=timeouts,
            )
        except (ValueError, ArgumentError):
            raise InvalidUrl("DATABASE_URL", redact(settings.database_url)) from None
        try:
            client = connect(settings, timeout=connect_timeout)
        except ValueError:
            raise InvalidUrl("REDIS_URL", redact(settings.redis_url)) from None
        return cls(
            settings=settings,
            engine=engine,
            coordinator=Coordinator(client, settings),
            publisher=publisher,
            catalog=Catalog(settings.tasks_dir),
            hostname=hostname or socket.gethostname(),
        )

    def __post_init__(self) -> None:
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def session(self) -> Session:
        """A new session on the records database."""
        return self._sessions()

    @contextmanager
    def held_session(self) -> Iterator[Session]:
        """A session that keeps one connection for its whole life, for a chunk's batches.

        A session on the engine hands its connection back to the pool after each commit,
        and the pool pings it on the way out and rolls it back on the way in: two round
        trips a batch that the batch does not need.
        """
        with (
            self.engine.connect() as connection,
            Session(bind=connection, expire_on_commit=False) as session,
        ):
            yield session

    def step(self, name: str) -> None:
        """Mark a step of claiming or starting work: "claimed", "taken", "started", "planned"."""
        if self.on_step is not None:
            self.on_step(name)

    def publish(self, messages: Iterable[ChunkMessage], countdown: float = 0.0) -> None:
        """Publish chunk jobs, then mark each queued once its publish went through.

        Marking after the publish means a job lost on the way (the process killed, the broker
        unreachable) has no marker, so the next deploy hook or sweep publishes it again; a
        job published twice is harmless, since only one copy can start its lane's epoch.
        Raises what the publisher raised, after marking the jobs published before it.
        """
        published: dict[tuple[str, int], int] = {}
        try:
            for message in messages:
                self.publisher.publish(message, countdown=countdown)
                published[(message.version, message.lane)] = message.epoch
        finally:
            try:
                self.coordinator.mark_queued(published)
            except RedisError:
                pass  # No marker: the next pass re-publishes, and the copy is fenced.

    def create_tables(self) -> None:
        """Create task_records if it is missing."""
        create_tables(self.engine)

    def close(self) -> None:
        """Release pooled connections."""
        self.engine.dispose()
        self.coordinator.close()
