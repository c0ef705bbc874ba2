"""The PostgreSQL health throttle against real servers: a slow VACUUM and a lagging standby."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from data_tasks.data_task import Throttle
from data_tasks.database import make_engine
from data_tasks.runner import run_chunk
from data_tasks.runtime import Runtime
from data_tasks.scheduler import enqueue
from data_tasks.status import Status
from data_tasks.throttles import Health, measure_postgres, postgres_health
from tests.conftest import copy_tasks
from tests.items import applied_counts, create_items
from tests.processes import wait_for
from tests.running import drain, record, take
from tests.test_flower import free_port

THROTTLED = "20250305000000"


def test_a_healthy_primary_with_no_standby_never_backs_off(postgres_engine: Engine) -> None:
    create_items(postgres_engine, 10)
    with Session(postgres_engine) as session:
        assert measure_postgres(session, "items") == Health(0.0, 0, False)
        assert postgres_health("items")(session) == 0.0
        assert postgres_health("no_such_table")(session) == 0.0


def test_sqlite_never_backs_off(sqlite_url: str) -> None:
    with Session(make_engine(sqlite_url)) as session:
        assert postgres_health("items")(session) == 0.0


class SlowVacuum:
    """A real VACUUM of a table, slowed by its cost delay, running until cancelled."""

    def __init__(self, engine: Engine, table: str) -> None:
        self.engine = engine
        self.pid = 0
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._vacuum, args=(table,), daemon=True)
        self.thread.start()
        self.started.wait(30)

    def _vacuum(self, table: str) -> None:
        with self.engine.connect() as connection:
            connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            self.pid = int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())
            connection.execute(text("SET vacuum_cost_delay = 100"))
            connection.execute(text("SET vacuum_cost_limit = 1"))
            self.started.set()
            try:
                connection.execute(text(f"VACUUM {table}"))
            except DBAPIError:
                pass  # cancelled by stop()

    def in_progress(self) -> bool:
        """True while pg_stat_progress_vacuum shows this VACUUM."""
        with self.engine.connect() as connection:
            query = text("SELECT count(*) FROM pg_stat_progress_vacuum WHERE pid = :pid")
            return bool(connection.execute(query, {"pid": self.pid}).scalar_one())

    def stop(self) -> None:
        """Cancel the VACUUM and wait for its thread."""
        if self.thread.is_alive():
            # A finished VACUUM gives its connection back to the pool, and this one may be it:
            # never cancel ourselves.
            with self.engine.connect() as connection:
                connection.execute(
                    text("SELECT pg_cancel_backend(:pid) WHERE :pid <> pg_backend_pid()"),
                    {"pid": self.pid},
                )
        self.thread.join(30)


@pytest.fixture
def vacuumed_items(postgres_engine: Engine) -> Iterator[SlowVacuum]:
    """`items` with dead rows, being vacuumed slowly."""
    create_items(postgres_engine, 50_000)
    with postgres_engine.begin() as connection:
        connection.execute(text("UPDATE items SET label = label || '.'"))
        connection.execute(text("UPDATE items SET label = rtrim(label, '.')"))
    vacuum = SlowVacuum(postgres_engine, "items")
    try:
        wait_for(vacuum.in_progress, timeout=30)
        yield vacuum
    finally:
        vacuum.stop()


def test_a_vacuum_of_the_table_makes_a_chunk_back_off_until_it_ends(
    runtime: Runtime, postgres_engine: Engine, vacuumed_items: SlowVacuum
) -> None:
    with Session(postgres_engine) as session:
        assert measure_postgres(session, "items").vacuuming
        assert postgres_health("items", backoff_seconds=7.0)(session) == 7.0
        assert postgres_health("other_table")(session) == 0.0
    copy_tasks(runtime.settings.tasks_dir, "20250305000000_ops_throttled_items.py")
    enqueue(runtime)

    summary = run_chunk(runtime, take(runtime)[0])

    assert (summary["outcome"], summary["reason"], summary["batches"]) == (
        "continued",
        "throttled",
        0,
    )
    assert applied_counts(postgres_engine) == {0: 50_000}

    vacuumed_items.stop()
    with Session(postgres_engine) as session:
        wait_for(lambda: postgres_health("items")(session) == 0.0, timeout=60)
    drain(runtime)
    assert record(runtime, THROTTLED).state == Status.SUCCEEDED
    assert applied_counts(postgres_engine) == {1: 50_000}


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class Cluster:
    """A throw-away PostgreSQL server of our own (primary or standby), run as `postgres`."""

    def __init__(self, bin_dir: Path, data: Path, port: int) -> None:
        self.bin_dir = bin_dir
        self.data = data
        self.port = port
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def run(self, *command: str) -> None:
        """Run a PostgreSQL program as the postgres user (initdb refuses root)."""
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        program = str(self.bin_dir / command[0])
        subprocess.run(
            [*prefix, program, *command[1:]],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )

    def start(self) -> None:
        """Start it and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.data.parent} -c listen_addresses=127.0.0.1"
        # The server's output goes to a file: a pipe it inherited would never close.
        log = str(self.data.parent / f"{self.data.name}.log")
        self.run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        """Stop it fast."""
        try:
            self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        except subprocess.CalledProcessError:
            pass  # It was not running.


@pytest.fixture
def replicated() -> Iterator[tuple[Engine, Engine]]:
    """A primary and a streaming standby of our own: engines on each."""
    bin_dir = _postgres_bin()
    if bin_dir is None or (os.geteuid() == 0 and shutil.which("runuser") is None):
        pytest.skip("no PostgreSQL server binaries to build a primary and a standby with")
    # Under /tmp itself: pytest's own temporary folders are closed to other users.
    base = Path(tempfile.mkdtemp(prefix="data-tasks-replication-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
    primary = Cluster(bin_dir, base / "primary", free_port())
    standby = Cluster(bin_dir, base / "standby", free_port())
    primary.run("initdb", "-D", str(primary.data), "-A", "trust", "-U", "postgres")
    with (primary.data / "pg_hba.conf").open("a") as hba:
        hba.write("host replication all 127.0.0.1/32 trust\n")
    engines: list[Engine] = []
    try:
        primary.start()
        standby.run(
            "pg_basebackup",
            *("-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres"),
            *("-D", str(standby.data), "-R", "-X", "stream"),
        )
        standby.start()
        engines = [make_engine(primary.url), make_engine(standby.url)]
        yield engines[0], engines[1]
    finally:
        for engine in engines:
            engine.dispose()
        standby.stop()
        primary.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_a_standby_that_stopped_replaying_makes_both_sides_back_off(
    replicated: tuple[Engine, Engine],
) -> None:
    primary, standby = replicated
    lagging_bytes = postgres_health(max_lag_bytes=1024, backoff_seconds=5.0)
    lagging_time = postgres_health(max_lag_seconds=0.0, backoff_seconds=5.0)

    def backoff(engine: Engine, throttle: Throttle) -> float:
        with Session(engine) as session:
            return throttle(session)

    with primary.begin() as connection:
        connection.execute(text("CREATE TABLE marks (at timestamptz DEFAULT now())"))
        connection.execute(text("INSERT INTO marks DEFAULT VALUES"))
    with standby.connect() as connection:
        assert connection.execute(text("SELECT pg_is_in_recovery()")).scalar_one()
    wait_for(lambda: backoff(primary, lagging_bytes) == 0.0, timeout=60)
    wait_for(lambda: backoff(standby, lagging_time) == 0.0, timeout=60)

    with standby.connect() as connection:
        connection.execute(text("SELECT pg_wal_replay_pause()"))
    with primary.begin() as connection:
        connection.execute(text("CREATE TABLE filler AS SELECT g FROM generate_series(1, 50000) g"))

    assert wait_for(lambda: backoff(primary, lagging_bytes), timeout=60) == 5.0
    assert wait_for(lambda: backoff(standby, lagging_time), timeout=60) == 5.0
    with Session(primary) as session:
        assert measure_postgres(session, None).lag_bytes > 1024

    with standby.connect() as connection:
        connection.execute(text("SELECT pg_wal_replay_resume()"))
    wait_for(lambda: backoff(primary, lagging_bytes) == 0.0, timeout=60)
    wait_for(lambda: backoff(standby, lagging_time) == 0.0, timeout=60)
