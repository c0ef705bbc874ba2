"""Counting round trips from what libpq actually sends and receives on PostgreSQL.

Every statement the client waits for ends with the server's ReadyForQuery message, whether it
went as a simple query (BEGIN, COMMIT) or as Parse/Bind/Execute/Sync: so the round trips are
the ReadyForQuery lines of libpq's protocol trace, the driver's own record of the wire.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg import pq
from sqlalchemy import Engine, event


@dataclass
class Wire:
    """The protocol trace of every connection an engine handed out while it was recorded."""

    directory: Path
    files: list[Path] = field(default_factory=list)
    # How many times the client waited for the server: counted when the recording ends.
    round_trips: int = 0

    def count(self) -> int:
        """The ReadyForQuery messages in the traces so far."""
        return sum(
            1
            for path in self.files
            for line in path.read_text().splitlines()
            if line.startswith("B\t") and "\tReadyForQuery" in line
        )


@contextmanager
def recorded(engine: Engine) -> Iterator[Wire]:
    """Trace the libpq protocol of each connection checked out of `engine` until the end."""
    with tempfile.TemporaryDirectory() as directory:
        wire = Wire(Path(directory))
        # id(DBAPI connection) -> (its libpq connection, the open trace file)
        traced: dict[int, tuple[Any, Any]] = {}

        def on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
            path = wire.directory / f"{len(wire.files)}.trace"
            wire.files.append(path)
            handle = path.open("w")
            pgconn = dbapi_connection.pgconn
            pgconn.trace(handle.fileno())
            pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
            traced[id(dbapi_connection)] = (pgconn, handle)

        def on_checkin(dbapi_connection: Any, _record: Any) -> None:
            _stop(traced, [id(dbapi_connection)])

        event.listen(engine, "checkout", on_checkout)
        event.listen(engine, "checkin", on_checkin)
        try:
            yield wire
        finally:
            event.remove(engine, "checkout", on_checkout)
            event.remove(engine, "checkin", on_checkin)
            _stop(traced, list(traced))
            wire.round_trips = wire.count()


def _stop(traced: dict[int, tuple[Any, Any]], keys: list[int]) -> None:
    for key in keys:
        if key in traced:
            pgconn, handle = traced.pop(key)
            pgconn.untrace()
            handle.close()
