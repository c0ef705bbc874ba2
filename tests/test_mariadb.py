"""MySQL/MariaDB as the records and data database, on a real MariaDB server.

The in-process suite (every test on `db_runtime`) runs on MariaDB too; these are the parts
that differ there: URLs, matched-row counts, case-sensitive cursors, the session settings,
and the whole path with a real deploy hook and real celery workers, faults included.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, text
from sqlalchemy.orm import Session

from data_tasks.database import make_engine, normalize_url
from data_tasks.lanes import ADVANCE, TaskLane
from data_tasks.publisher import RecordingPublisher
from data_tasks.records import Base, encode_cursor, get, insert_missing, move
from data_tasks.runtime import Runtime
from data_tasks.settings import Settings
from data_tasks.status import Status
from tests import test_guarantees as guarantees
from tests import test_scheduler as scheduler
from tests.conftest import copy_tasks
from tests.faults import test_hard_kill as hard_kill
from tests.faults import test_paused_runner as paused_runner
from tests.faults.harness import SHAPES
from tests.faults.ledger import FaultCase
from tests.items import applied_counts, create_items
from tests.processes import WorkerProcess, run_hook, wait_for

VERSION = "20250101000000"
# The settings and engine fixtures of each database.
FIXTURES = {
    "postgresql": ("pg_settings", "postgres_engine"),
    "mariadb": ("mariadb_settings", "mariadb_engine"),
}


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("mysql://app:secret@db:3306/app", "mysql+pymysql"),
        ("mariadb://app:secret@db/app", "mariadb+pymysql"),
        ("mysql+pymysql://app@db/app", "mysql+pymysql"),
    ],
)
def test_mysql_and_mariadb_urls_pick_the_installed_driver(url: str, driver: str) -> None:
    assert normalize_url(url).startswith(driver + "://")
    engine = make_engine(url)
    assert engine.dialect.driver == "pymysql"
    engine.dispose()


def test_an_update_that_changes_nothing_still_counts_its_row(mariadb_engine: Engine) -> None:
    # The compare-and-set takes rowcount 1 for "this chunk still owns the lane": it must count
    # the row matched, also when the new values equal the old ones.
    Base.metadata.create_all(mariadb_engine)
    with mariadb_engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO task_lanes (version, lane, epoch, status, planned, processed, "
                "attempts) VALUES (:v, 0, 1, 'running', 1, 0, 0)"
            ),
            {"v": VERSION},
        )
        same = connection.execute(
            text("UPDATE task_lanes SET epoch = 1 WHERE version = :v AND lane = 0"), {"v": VERSION}
        )
        assert same.rowcount == 1


def test_cursors_that_differ_only_in_case_do_not_match(mariadb_engine: Engine) -> None:
    # A runner that outlived its lease holds the cursor "abc"; another has since moved the lane
    # to "Abc" (string keys, a custom cursor): the stale runner's compare-and-set must miss.
    Base.metadata.create_all(mariadb_engine)
    with mariadb_engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO task_records (version, name, status, epoch, processed, attempts, "
                "created_at) VALUES (:v, 'strings', 'running', 1, 0, 0, now())"
            ),
            {"v": VERSION},
        )
        connection.execute(
            insert(TaskLane),
            {
                "version": VERSION,
                "lane": 0,
                "epoch": 1,
                "status": "running",
                "planned": True,
                "processed": 0,
                "attempts": 0,
                "cursor": encode_cursor("Abc"),
            },
        )
    parameters = {
        "l_version": VERSION,
        "l_lane": 0,
        "l_epoch": 1,
        "l_run_epoch": 1,
        "l_new": encode_cursor("abd"),
        "l_size": 1,
        "l_beat": None,
        "l_batch_size": 1,
    }
    with mariadb_engine.begin() as connection:
        stale = connection.execute(ADVANCE, {**parameters, "l_old": encode_cursor("abc")})
        assert stale.rowcount == 0
        owned = connection.execute(ADVANCE, {**parameters, "l_old": encode_cursor("Abc")})
        assert owned.rowcount == 1


def test_timestamps_keep_their_microseconds_and_read_back_as_aware_utc(
    mariadb_engine: Engine,
) -> None:
    Base.metadata.create_all(mariadb_engine)
    beat = datetime(2025, 6, 1, 14, 0, 0, 123456, tzinfo=UTC)
    with Session(mariadb_engine) as session, session.begin():
        insert_missing(session, [(VERSION, "stamps")])
        assert move(session, VERSION, Status.PENDING, Status.ENQUEUED, 0, {"enqueued_at": beat})
    with Session(mariadb_engine) as session:
        assert get(session, VERSION).enqueued_at == beat


def test_sessions_read_committed_rows_and_end_an_idle_transaction(mariadb_engine: Engine) -> None:
    Base.metadata.create_all(mariadb_engine)
    engine = make_engine(
        mariadb_engine.url.render_as_string(hide_password=False), idle_in_transaction_seconds=1
    )
    try:
        with engine.connect() as connection:
            level = connection.execute(text("SELECT @@tx_isolation")).scalar_one()
            assert level == "READ-COMMITTED"
            # A runner frozen inside a batch: the server ends its session and its locks.
            connection.execute(text("SELECT count(*) FROM task_lanes"))
            time.sleep(2.5)
            with pytest.raises(Exception, match=r"(?i)lost connection|gone away|timeout"):
                connection.execute(text("SELECT 1"))
    finally:
        engine.dispose()


@pytest.fixture
def mariadb_runtime(mariadb_settings: Settings) -> Iterator[Runtime]:
    """An in-process runtime (recording publisher) on MariaDB."""
    built = Runtime.build(mariadb_settings, RecordingPublisher(), hostname="tests@localhost")
    built.create_tables()
    yield built
    built.close()


def test_the_hook_and_pause_never_wait_on_a_running_batch_on_mariadb(
    mariadb_runtime: Runtime, mariadb_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    guarantees.test_the_hook_and_pause_never_wait_on_a_running_batch(
        mariadb_runtime, mariadb_engine, monkeypatch
    )


def test_concurrent_hooks_publish_each_task_once_on_mariadb(
    mariadb_settings: Settings, tasks_dir: Path
) -> None:
    scheduler.test_concurrent_hooks_publish_each_task_once(mariadb_settings, tasks_dir)


def finished(engine: Engine, version: str) -> bool:
    """True once the version's record says succeeded."""
    with engine.connect() as connection:
        found = connection.execute(
            text("SELECT status FROM task_records WHERE version = :v"), {"v": version}
        ).scalar()
    return found == "succeeded"


def run_backfill_end_to_end(
    settings: Settings,
    engine: Engine,
    workers: list[WorkerProcess],
    tmp_path: Path,
    file: str,
    rows: int,
) -> float:
    """Hook, then a real worker runs the task to success; returns the seconds it took."""
    version = file.split("_", 1)[0]
    copy_tasks(settings.tasks_dir, file)
    create_items(engine, rows)
    workers.append(WorkerProcess(settings, tmp_path, concurrency=2).wait_ready())
    started = time.monotonic()
    hook = run_hook(settings)
    assert hook.returncode == 0, hook.stderr
    assert f"enqueued {version}" in hook.stdout
    wait_for(lambda: finished(engine, version), timeout=180, interval=0.05)
    seconds = time.monotonic() - started
    assert applied_counts(engine) == {1: rows}
    chunks = workers[0].log().count(f"event=running version={version}")
    assert chunks > 5, f"only {chunks} chunks"
    return seconds


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("database", "file", "rows"),
    [
        ("mariadb", "20250101000000_count_items.py", 100_000),
        ("mariadb", "20250103000000_count_item_rows.py", 5_000),
        # The same keyset backfill on PostgreSQL, for the speed next to it.
        ("postgresql", "20250101000000_count_items.py", 100_000),
    ],
    ids=["mariadb-keyset", "mariadb-row_iteration", "postgresql-keyset"],
)
def test_a_hook_and_a_real_worker_apply_every_row_once(
    request: pytest.FixtureRequest,
    workers: list[WorkerProcess],
    tmp_path: Path,
    database: str,
    file: str,
    rows: int,
) -> None:
    settings_fixture, engine_fixture = FIXTURES[database]
    settings: Settings = request.getfixturevalue(settings_fixture)
    engine: Engine = request.getfixturevalue(engine_fixture)
    # A chunk ends after its first batch (every batch takes longer than a millisecond), so
    # the run hands over from chunk to chunk once per batch, however fast the machine is.
    settings = settings.with_(chunk_seconds=0.001)
    seconds = run_backfill_end_to_end(settings, engine, workers, tmp_path, file, rows)
    print(f"\n{database} {file}: {rows} rows in {seconds:.2f}s, {rows / seconds:,.0f} rows/s")


@pytest.mark.e2e
def test_a_worker_killed_mid_backfill_is_reclaimed_and_every_row_counted_once(
    mariadb_settings: Settings,
    mariadb_engine: Engine,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    hard_kill.test_sigkill_at_random_points_then_every_row_is_counted_once(
        mariadb_settings,
        mariadb_engine,
        workers,
        tmp_path,
        FaultCase(mariadb_engine, "mariadb"),  # the ledger counts the PostgreSQL runs only
        SHAPES["keyset"],
    )


@pytest.mark.e2e
def test_a_revived_runner_commits_nothing_on_mariadb(
    mariadb_settings: Settings,
    mariadb_engine: Engine,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    paused_runner.test_a_revived_runner_cannot_commit(
        mariadb_settings,
        mariadb_engine,
        workers,
        tmp_path,
        FaultCase(mariadb_engine, "mariadb"),  # the ledger counts the PostgreSQL runs only
    )


@pytest.mark.e2e
def test_a_runner_paused_between_batches_is_fenced_on_mariadb(
    mariadb_settings: Settings,
    mariadb_engine: Engine,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    paused_runner.test_a_runner_paused_between_batches_is_fenced_by_its_epoch(
        mariadb_settings,
        mariadb_engine,
        workers,
        tmp_path,
        FaultCase(mariadb_engine, "mariadb"),  # the ledger counts the PostgreSQL runs only
    )
