"""What a run costs the database beyond time: round trips, WAL bytes, time spent waiting on locks.

- round trips: turns counted by bench.proxy, which every connection of the method goes through
  (the loop's script, or every process of the worker; the deploy hook's own few are not
  counted, nor are the worker's before it picked the job up, see `Counted`), in one untimed
  run per method, since the proxy adds latency;
- lock waits: in the same run, pg_stat_activity sampled every 10 ms for backends of the
  benchmark's database whose wait_event_type is Lock; seconds = samples x 10 ms. PostgreSQL 15
  keeps no lock-wait time of its own, and log_lock_waits reports only waits longer than
  deadlock_timeout (1 s);
- WAL bytes: in the same run, the WAL records between the run's first and last position that
  belong to the benchmark's database, read back with pg_walinspect: those whose blocks are in
  its relations, and every record (commits included) of the transactions that wrote them. The
  server's WAL position alone would count every other database's writes too, and the server is
  shared. Without pg_walinspect the position's difference is quoted, marked as the server's.
  Each run starts right after a CHECKPOINT, so its first change to each page logs the whole
  page, as the first backfill after a production checkpoint does.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from bench.proxy import CountingProxy
from bench.services import Services

SAMPLE_SECONDS = 0.01
LOCK_WAITERS = text(
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND wait_event_type = 'Lock'"
)
WAL_FLUSHED = text("SELECT pg_current_wal_flush_lsn()")
HOLD_WAL = text("SELECT pg_create_physical_replication_slot(:name, true, true)")
RELEASE_WAL = text("SELECT pg_drop_replication_slot(:name)")
DATABASE_OID = text("SELECT oid FROM pg_database WHERE datname = current_database()")
WAL_DIFF = text("SELECT pg_wal_lsn_diff(CAST(:end AS pg_lsn), CAST(:start AS pg_lsn))")
OWN_WAL = text(
    """
    WITH records AS (
        SELECT xid::text AS xid, record_length, block_ref
        FROM pg_get_wal_records_info(CAST(:start AS pg_lsn), CAST(:end AS pg_lsn))
    ), ours AS (
        SELECT DISTINCT xid FROM records WHERE block_ref LIKE :blocks AND xid <> '0'
    )
    SELECT coalesce(sum(record_length), 0) FROM records
    WHERE block_ref LIKE :blocks OR xid IN (SELECT xid FROM ours)
    """
)


class WalReader:
    """Holds the run's WAL on the server, then sums the records of the benchmark's database.

    A temporary physical replication slot, taken before the run, keeps the server from
    recycling the run's WAL segments (a shared server checkpoints often); it is dropped after,
    and would go with the connection should the benchmark die. Without pg_walinspect or a free
    slot, the server's position is used.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.scope = "database"

    @contextmanager
    def holding(self) -> Iterator[Connection]:
        """A connection keeping the WAL from here on, while the block runs."""
        slot = f"bench_wal_{os.getpid()}"
        with self.engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT")
            try:
                connection.execute(text("CREATE EXTENSION IF NOT EXISTS pg_walinspect"))
                connection.execute(HOLD_WAL, {"name": slot})
            except DBAPIError:
                self.scope = "server"
            try:
                yield connection
            finally:
                if self.scope == "database":
                    connection.execute(RELEASE_WAL, {"name": slot})

    def bytes_between(self, connection: Connection, start: str, end: str) -> int:
        """Bytes of WAL between two positions: this database's, or else the server's."""
        if self.scope == "database":
            oid = connection.execute(DATABASE_OID).scalar_one()
            found = connection.execute(
                OWN_WAL, {"start": start, "end": end, "blocks": f"%/{oid}/%"}
            )
            return int(found.scalar_one())
        return int(connection.execute(WAL_DIFF, {"start": start, "end": end}).scalar_one())


@dataclass(frozen=True)
class Cost:
    """One method's costs for one run over `rows` rows in `batches` batches."""

    rows: int
    batches: int | None
    round_trips: int
    lock_wait_seconds: float
    wal_bytes: int
    # "database": this database's records only; "server": the server's position moved by.
    wal_scope: str

    def per_batch(self) -> float | None:
        """Round trips per batch, when the run's batches are known."""
        return self.round_trips / self.batches if self.batches else None

    def per_million(self, value: float) -> float:
        """A figure of this run scaled to 1,000,000 rows."""
        return value * 1_000_000 / self.rows

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with the derived figures."""
        return {
            **asdict(self),
            "round_trips_per_batch": self.per_batch(),
            "wal_bytes_per_million_rows": self.per_million(self.wal_bytes),
            "lock_wait_seconds_per_million_rows": self.per_million(self.lock_wait_seconds),
        }


class LockSampler:
    """A thread sampling how many of the database's backends wait on a lock."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.waiting_samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="lock-sampler", daemon=True)

    def _sample(self) -> None:
        with self.engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT")
            while not self._stop.wait(SAMPLE_SECONDS):
                self.waiting_samples += int(connection.execute(LOCK_WAITERS).scalar_one())

    @contextmanager
    def running(self) -> Iterator[LockSampler]:
        """Sample for the duration of a block."""
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()

    @property
    def seconds(self) -> float:
        """Backend-seconds spent waiting on locks (sampled)."""
        return self.waiting_samples * SAMPLE_SECONDS


class Counted:
    """The proxy a method's connections go through, with its counts started when asked."""

    def __init__(self, proxy: CountingProxy, url: str) -> None:
        self.proxy = proxy
        self.url = url

    def start(self) -> None:
        """Count from here (after a worker's own start-up, before the job)."""
        self.proxy.reset()


def measure(
    services: Services, rows: int, batches: int | None, run: Callable[[Counted], None]
) -> Cost:
    """Run `run` once with a counting proxy for it to use, sampling lock waits and WAL."""
    host, port = services.address()
    wal = WalReader(services.engine)
    with wal.holding() as connection, CountingProxy(host, port) as proxy:
        start = str(connection.execute(WAL_FLUSHED).scalar_one())
        counted = Counted(proxy, services.url_through(proxy.port))
        proxy.reset()
        with LockSampler(services.engine).running() as sampler:
            run(counted)
        round_trips = proxy.round_trips
        end = str(connection.execute(WAL_FLUSHED).scalar_one())
        written = wal.bytes_between(connection, start, end)
    return Cost(rows, batches, round_trips, sampler.seconds, written, wal.scope)
