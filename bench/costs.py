"""What a run costs the database beyond time: round trips, WAL bytes, time spent waiting on locks.

- round trips: turns counted by bench.proxy, which every connection of the method goes through
  (the loop's script, or every process of the worker; the deploy hook's own few are not
  counted, nor are the worker's before it picked the job up, see `Counted`), in one untimed
  run per method, since the proxy adds latency;
- lock waits: in the same run, pg_stat_activity sampled every 10 ms for backends of the
  benchmark's database whose wait_event_type is Lock; seconds = samples x 10 ms. PostgreSQL 15
  keeps no lock-wait time of its own, and log_lock_waits reports only waits longer than
  deadlock_timeout (1 s);
- WAL bytes: pg_current_wal_lsn() before and after each timed run. The LSN is the server's, so
  a neighbour writing to another database meanwhile is counted too; such noise only adds, so
  the least of the timed runs is quoted (exact on a quiet server, an upper bound on a busy one).
  Each run starts right after a CHECKPOINT, so its first change to each page logs the whole
  page, as the first backfill after a production checkpoint does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Engine, text

from bench.proxy import CountingProxy
from bench.services import Services

SAMPLE_SECONDS = 0.01
LOCK_WAITERS = text(
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND wait_event_type = 'Lock'"
)
WAL_LSN = text("SELECT pg_current_wal_lsn()")
WAL_DIFF = text("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), CAST(:before AS pg_lsn))")


def wal_position(engine: Engine) -> str:
    """The server's current WAL position."""
    with engine.connect() as connection:
        return str(connection.execute(WAL_LSN).scalar_one())


def wal_since(engine: Engine, position: str) -> int:
    """Bytes of WAL the server wrote since `position`."""
    with engine.connect() as connection:
        return int(connection.execute(WAL_DIFF, {"before": position}).scalar_one())


@dataclass(frozen=True)
class Cost:
    """One method's costs for one run over `rows` rows in `batches` batches."""

    rows: int
    batches: int | None
    round_trips: int
    lock_wait_seconds: float

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
    """Run `run` once with a counting proxy for it to use, sampling lock waits."""
    host, port = services.address()
    with CountingProxy(host, port) as proxy:
        counted = Counted(proxy, services.url_through(proxy.port))
        proxy.reset()
        with LockSampler(services.engine).running() as sampler:
            run(counted)
        round_trips = proxy.round_trips
    return Cost(rows, batches, round_trips, sampler.seconds)
