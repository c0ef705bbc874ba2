"""The connections a runner or a deploy hook works with, built once from the settings."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.exceptions import RedisError
from sqlalchemy import Connection, Engine
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


# Told of each statement run: (connection, cursor, statement, ...), as after_cursor_execute is.
StatementHook = Callable[..., None]


class BatchHost(Protocol):
    """Where a chunk's batches run when it is not the records engine: a Django project's
    own connection, with its transaction block around each batch."""

    def connect(self) -> AbstractContextManager[Connection]:
        """The connection a chunk's batches (and a dry run's) run on."""
        ...

    def transaction(self) -> AbstractContextManager[object]:
        """Entered around each batch, outside the batch's own transaction."""
        ...

    def watch(self, on_statement: StatementHook) -> AbstractContextManager[object]:
        """While entered, on_statement(None, cursor, sql) follows each statement the host's
        own code runs (the ORM's), as SQLAlchemy's after_cursor_execute follows the session's."""
        ...


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
    # Where batches run; None: on the records engine, in its own transactions.
    batch_host: BatchHost | None = None

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
            catalog=Catalog(settings.tasks_dirs),
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
            self.batch_connection() as connection,
            Session(bind=connection, expire_on_commit=False) as session,
        ):
            yield session

    def batch_connection(self) -> AbstractContextManager[Connection]:
        """The connection batches run on: the batch host's, else one of the records engine."""
        return self.batch_host.connect() if self.batch_host else self.engine.connect()

    def batch_transaction(self) -> AbstractContextManager[object]:
        """What each batch runs inside, around its own transaction (the batch host's block)."""
        return self.batch_host.transaction() if self.batch_host else nullcontext()

    def watching(self, on_statement: StatementHook) -> AbstractContextManager[object]:
        """Follow the statements the batch host's own code runs; nothing without a host."""
        return self.batch_host.watch(on_statement) if self.batch_host else nullcontext()

    def step(self, name: str) -> None:
        """Mark a step of a chunk's work: "claimed", "taken", "started", "planned", "finishing"."""
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


# Called on a runtime before its first use by a worker process, the deploy hook or a
# command (a Django project points it at its apps' task folders and its own connection).
Prepare = Callable[[Runtime], None]
