"""Upgrading from 0.1.0 and 0.2.0: tables upgraded in place, records kept, every task runnable."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

import pytest
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    column,
    select,
    table,
    text,
    update,
)

from data_tasks import operations
from data_tasks.history import send_unsent
from data_tasks.notifications import Notice
from data_tasks.runtime import Runtime
from data_tasks.scheduler import enqueue
from data_tasks.schema import SCHEMA_VERSION, SchemaTooNew, SchemaVersion, create_tables
from data_tasks.status import Status
from tests.conftest import copy_tasks
from tests.items import applied_counts, create_items
from tests.running import drain, record, take

AT_ONCE = "20250105000000"  # a one-shot that adds 1 to every item: succeeded under 0.1.0
COUNT = "20250101000000"  # a keyset backfill that adds 1: running at cursor 400
SHARDS = "20250601000000"  # three shards that add 1: paused, shard 0 done, shard 1 at 450


def old_layout(engine: Engine) -> None:
    """The tables 0.1.0 created, with the records a deploy of it left behind."""
    metadata = MetaData()
    records = Table(
        "task_records",
        metadata,
        Column("version", String(14), primary_key=True),
        Column("name", String(200)),
        Column("status", String(16)),
        Column("epoch", Integer),
        Column("cursor", Text, nullable=True),
        Column("processed", BigInteger),
        Column("total", BigInteger, nullable=True),
        Column("batch_size", Integer, nullable=True),
        Column("attempts", Integer),
        Column("last_error", Text, nullable=True),
        Column("traceback", Text, nullable=True),
        Column("worker", String(255), nullable=True),
        Column("source_hash", String(64), nullable=True),
        Column("created_at", DateTime(timezone=True)),
        Column("enqueued_at", DateTime(timezone=True), nullable=True),
        Column("started_at", DateTime(timezone=True), nullable=True),
        Column("heartbeat_at", DateTime(timezone=True), nullable=True),
        Column("finished_at", DateTime(timezone=True), nullable=True),
    )
    shards = Table(
        "task_shards",
        metadata,
        Column("version", String(14), primary_key=True),
        Column("shard", Integer, primary_key=True),
        Column("epoch", Integer),
        Column("status", String(16)),
        Column("lower", Text, nullable=True),
        Column("upper", Text, nullable=True),
        Column("cursor", Text, nullable=True),
        Column("processed", BigInteger),
        Column("total", BigInteger, nullable=True),
        Column("batch_size", Integer, nullable=True),
        Column("attempts", Integer),
        Column("last_error", Text, nullable=True),
        Column("heartbeat_at", DateTime(timezone=True), nullable=True),
        Column("finished_at", DateTime(timezone=True), nullable=True),
    )
    with engine.begin() as connection:
        # The test's runtime made the new release's tables: this database is 0.1.0's instead.
        for name in ("task_lanes", "data_tasks_schema", "task_records"):
            connection.execute(text(f"DROP TABLE IF EXISTS {name}"))
    metadata.create_all(engine)
    then = datetime(2026, 11, 1, tzinfo=UTC)
    base = {
        "attempts": 0,
        "created_at": then,
        "started_at": then,
        "batch_size": None,
        "heartbeat_at": then,
        "finished_at": None,
    }
    with engine.begin() as connection:
        connection.execute(
            records.insert(),
            [
                {
                    **base,
                    "version": AT_ONCE,
                    "name": "count_items_at_once",
                    "status": "succeeded",
                    "epoch": 2,
                    "cursor": '{"data_tasks":"finished"}',
                    "processed": 1,
                    "total": 1,
                    "finished_at": then,
                },
                {
                    **base,
                    "version": COUNT,
                    "name": "count_items",
                    "status": "running",
                    "epoch": 4,
                    "cursor": "400",
                    "processed": 400,
                    "total": 1000,
                    "batch_size": 200,
                },
                {
                    **base,
                    "version": SHARDS,
                    "name": "count_items_in_shards",
                    "status": "paused",
                    "epoch": 3,
                    "cursor": None,
                    "processed": 450,
                    "total": 1000,
                },
            ],
        )
        shard = {"version": SHARDS, "epoch": 3, "attempts": 0, "batch_size": None}
        connection.execute(
            shards.insert(),
            [
                {
                    **shard,
                    "shard": 0,
                    "status": "succeeded",
                    "lower": None,
                    "upper": "333",
                    "cursor": "333",
                    "processed": 333,
                    "total": 333,
                },
                {
                    **shard,
                    "shard": 1,
                    "status": "running",
                    "lower": "333",
                    "upper": "666",
                    "cursor": "450",
                    "processed": 117,
                    "total": 333,
                },
                {
                    **shard,
                    "shard": 2,
                    "status": "running",
                    "lower": "666",
                    "upper": None,
                    "cursor": "666",
                    "processed": 0,
                    "total": 334,
                },
            ],
        )
        # What those runs applied: the one-shot everywhere, the backfill up to its cursor,
        # shard 0 whole and shard 1 up to its cursor.
        connection.execute(text("UPDATE items SET applied = 1"))
        connection.execute(text("UPDATE items SET applied = applied + 1 WHERE id <= 400"))
        connection.execute(text("UPDATE items SET applied = applied + 1 WHERE id <= 450"))


def test_a_deploy_upgrades_the_old_tables_and_every_task_carries_on(db_runtime: Runtime) -> None:
    runtime = db_runtime
    copy_tasks(
        runtime.settings.tasks_dir,
        "20250105000000_count_items_at_once.py",
        "20250101000000_count_items.py",
        "20250601000000_count_items_in_shards.py",
    )
    create_items(runtime.engine, 1_000)
    old_layout(runtime.engine)

    report = enqueue(runtime)  # the first deploy hook of the new release
    drain(runtime)
    operations.resume(runtime, SHARDS)
    drain(runtime)

    # The interrupted backfill resumed at its cursor, the paused shards at theirs, and the
    # finished one-shot did not run again: every row counted once by each task.
    assert applied_counts(runtime.engine) == {3: 1_000}
    assert [item.version for item in report.enqueued] == [COUNT]
    kept = record(runtime, AT_ONCE)
    assert (kept.state, kept.epoch, kept.processed) == (Status.SUCCEEDED, 2, 1)
    assert record(runtime, COUNT).state is Status.SUCCEEDED
    assert record(runtime, COUNT).processed == 1_000
    assert record(runtime, SHARDS).state is Status.SUCCEEDED
    with runtime.engine.connect() as connection:
        assert connection.execute(select(SchemaVersion.version)).scalar_one() == SCHEMA_VERSION


def test_an_old_runner_is_fenced_by_the_upgrade(db_runtime: Runtime) -> None:
    runtime = db_runtime
    copy_tasks(runtime.settings.tasks_dir, "20250101000000_count_items.py")
    create_items(runtime.engine, 1_000)
    old_layout(runtime.engine)

    create_tables(runtime.engine)

    # 0.1.0's compare-and-set for its next batch, at the epoch it ran with: refused.
    # (Built with SQLAlchemy: `cursor` is a reserved word that MySQL and MariaDB need quoted.)
    old = table(
        "task_records", column("version"), column("epoch"), column("cursor"), column("status")
    )
    with runtime.engine.begin() as connection:
        moved = connection.execute(
            update(old)
            .where(old.c.version == COUNT, old.c.epoch == 4, old.c.cursor == "400")
            .where(old.c.status == "running")
            .values(cursor="600")
        ).rowcount
    assert moved == 0
    assert take(runtime) == []


def test_records_from_a_newer_release_are_refused(db_runtime: Runtime) -> None:
    create_tables(db_runtime.engine)
    with db_runtime.engine.begin() as connection:
        versions = cast(Table, SchemaVersion.__table__)
        connection.execute(versions.update().values(version=SCHEMA_VERSION + 1))

    with pytest.raises(SchemaTooNew, match="newer than this release's"):
        create_tables(db_runtime.engine)


# The versions a global callback was told of, in order.
told: list[str] = []


def remember(notice: Notice) -> None:
    """A global callback that keeps what it was told."""
    told.append(notice.version)


def layout_of_0_2_0(engine: Engine) -> None:
    """0.2.0's tables (layout 2): task_history without the notice columns, one task done."""
    create_tables(engine)
    with engine.begin() as connection:
        for name in ("notice_sent_at", "notice_attempts"):
            connection.execute(text(f"ALTER TABLE task_history DROP COLUMN {name}"))
        connection.execute(cast(Table, SchemaVersion.__table__).update().values(version=2))
        connection.execute(
            text(
                "INSERT INTO task_records (version, name, status, epoch, processed, attempts, "
                "created_at) VALUES (:v, 'count_items_at_once', 'succeeded', 1, 1, 1, :at)"
            ),
            {"v": AT_ONCE, "at": datetime(2025, 1, 5, tzinfo=UTC)},
        )
        connection.execute(
            text(
                "INSERT INTO task_history (version, at, epoch, from_status, to_status, event, "
                "actor) VALUES (:v, :at, 1, 'running', 'succeeded', 'status', 'web.1')"
            ),
            {"v": AT_ONCE, "at": datetime(2025, 1, 5, tzinfo=UTC)},
        )


def test_an_upgrade_from_0_2_0_keeps_the_history_and_does_not_tell_its_changes_again(
    db_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = db_runtime
    monkeypatch.setenv("DATA_TASKS_NOTIFY", "tests.test_upgrade:remember")
    told.clear()
    copy_tasks(
        runtime.settings.tasks_dir,
        "20250105000000_count_items_at_once.py",
        "20250101000000_count_items.py",
    )
    create_items(runtime.engine, 100)
    layout_of_0_2_0(runtime.engine)

    enqueue(runtime)
    drain(runtime)

    assert record(runtime, AT_ONCE).state is Status.SUCCEEDED
    assert record(runtime, COUNT).state is Status.SUCCEEDED
    assert applied_counts(runtime.engine) == {1: 100}
    # The new task's success was told once; the change made under 0.2.0 was not told again.
    assert told == [COUNT]
    assert send_unsent(runtime.engine, runtime.catalog, older_than_seconds=0) == 0
    with runtime.engine.connect() as connection:
        history = connection.execute(
            text("SELECT version, notice_sent_at IS NOT NULL FROM task_history ORDER BY id")
        ).all()
        assert connection.execute(select(SchemaVersion.version)).scalar_one() == SCHEMA_VERSION
    assert history[0] == (AT_ONCE, True)
    assert all(sent for _, sent in history)
