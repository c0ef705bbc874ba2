"""Every batch applied exactly once, for the tasks users write on their first day.

Each test writes a task file as a user would, builds its table with an `applied` counter, runs
the task in-process on PostgreSQL and on SQLite, and counts how often each row was applied.
"""

from __future__ import annotations

import textwrap
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    Numeric,
    Table,
    Text,
    Uuid,
    text,
)
from sqlalchemy.types import TypeEngine

from data_tasks import operations
from data_tasks.cursors import decode_cursor, encode_cursor
from data_tasks.errors import InvalidTaskFile
from data_tasks.runtime import Runtime
from data_tasks.status import Status
from tests.running import lane, record

HEADER = """\
from sqlalchemy import text, select, table, column, Table, Column, MetaData
from sqlalchemy import Integer, BigInteger, Text, Uuid, DateTime, Numeric
from data_tasks import keyset_backfill, row_iteration
"""


def write_task(runtime: Runtime, version: str, body: str) -> str:
    """Write a task file `<version>_task.py` into the runtime's task folder; returns the version."""
    path = Path(runtime.settings.tasks_dir) / f"{version}_task.py"
    path.write_text(f'"""A generated task."""\n{HEADER}\n{textwrap.dedent(body)}')
    return version


def counts(engine: Engine, table: str) -> dict[int, int]:
    """How many rows of the table were applied 0, 1, 2... times."""
    with engine.connect() as connection:
        rows = connection.execute(text(f"SELECT applied, count(*) FROM {table} GROUP BY applied"))
        return {int(applied): int(count) for applied, count in rows}


def execute(engine: Engine, *statements: str, rows: list[dict[str, Any]] | None = None) -> None:
    """Run DDL statements, then insert `rows` with the last statement when given."""
    with engine.begin() as connection:
        for statement in statements[:-1] if rows is not None else statements:
            connection.execute(text(statement))
        if rows is not None:
            connection.execute(text(statements[-1]), rows)


def run(runtime: Runtime, version: str, batches_per_chunk: int = 3) -> operations.InlineRun:
    """Run a task in this process, a few batches per chunk so that it resumes many times."""
    return operations.run_inline(runtime, version, batches_per_chunk=batches_per_chunk)


# 1. An author's ORDER BY would page in another order than the key's.


def test_a_row_iteration_with_its_own_order_by_is_refused_at_declaration(
    db_runtime: Runtime,
) -> None:
    execute(
        db_runtime.engine,
        "CREATE TABLE items (id INTEGER PRIMARY KEY, grp INTEGER, applied INTEGER DEFAULT 0)",
    )
    version = write_task(
        db_runtime,
        "20260101000000",
        """
        items = table("items", column("id"), column("grp"))

        @row_iteration(select(items.c.id, items.c.grp).order_by(items.c.grp), depends_on=[])
        def by_group(session, rows):
            pass
        """,
    )
    with pytest.raises(InvalidTaskFile) as refused:
        db_runtime.catalog.task(version)
    message = str(refused.value)
    assert "\n" not in message
    assert "20260101000000_task.py" in message
    assert "row_iteration pages by its key; remove .order_by(...)" in message


# 2. A key a join repeats: a page must not end inside it.


@pytest.mark.parametrize("batch_size", [100, 2, 1])
def test_a_join_that_repeats_the_key_applies_every_row_once(
    db_runtime: Runtime, batch_size: int
) -> None:
    engine = db_runtime.engine
    execute(
        engine,
        "CREATE TABLE parents (id INTEGER PRIMARY KEY)",
        "CREATE TABLE children (id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL, "
        "applied INTEGER NOT NULL DEFAULT 0)",
    )
    execute(engine, "INSERT INTO parents (id) VALUES (:id)", rows=[{"id": i} for i in range(334)])
    children = [{"id": i, "parent": i // 3} for i in range(1002)]
    execute(engine, "INSERT INTO children (id, parent_id) VALUES (:id, :parent)", rows=children)
    version = write_task(
        db_runtime,
        "20260102000000",
        f"""
        parents = table("parents", column("id"))
        children = table("children", column("id"), column("parent_id"))
        query = select(parents.c.id, children.c.id.label("child_id")).join(
            children, children.c.parent_id == parents.c.id
        )

        @row_iteration(query, key="id", batch_size={batch_size}, parallel=2, depends_on=[])
        def count_children(session, rows):
            session.execute(
                text("UPDATE children SET applied = applied + 1 WHERE id = :id"),
                [{{"id": row.child_id}} for row in rows],
            )
        """,
    )
    assert run(db_runtime, version).status == Status.SUCCEEDED
    assert counts(engine, "children") == {1: 1002}
    assert record(db_runtime, version).processed == 1002


# 3. NULL keys: refused at the run's start, before any write.


@pytest.mark.parametrize("shape", ["row_iteration", "keyset_backfill"])
def test_null_keys_are_refused_in_one_line_before_any_write(
    db_runtime: Runtime, shape: str
) -> None:
    engine = db_runtime.engine
    execute(
        engine,
        "CREATE TABLE things (id INTEGER PRIMARY KEY, code INTEGER, "
        "applied INTEGER NOT NULL DEFAULT 0)",
    )
    rows = [{"id": i, "code": None if i % 10 == 0 else i} for i in range(1, 301)]
    execute(engine, "INSERT INTO things (id, code) VALUES (:id, :code)", rows=rows)
    if shape == "row_iteration":
        declaration = """
        things = table("things", column("code"))

        @row_iteration(select(things.c.code), key="code", batch_size=7, max_attempts=1,
                       depends_on=[])
        def by_code(session, rows):
            session.execute(text("UPDATE things SET applied = applied + 1 WHERE code = :c"),
                            [{"c": row.code} for row in rows])
        """
    else:
        declaration = """
        @keyset_backfill("things", key="code", batch_size=7, max_attempts=1, depends_on=[])
        def by_code(session, first, last):
            session.execute(text("UPDATE things SET applied = applied + 1 "
                                 "WHERE code BETWEEN :a AND :b"), {"a": first, "b": last})
        """
    version = write_task(db_runtime, "20260103000000", declaration)

    finished = run(db_runtime, version)

    assert finished.status == Status.FAILED
    assert counts(engine, "things") == {0: 300}
    error = record(db_runtime, version).last_error or ""
    assert "\n" not in error
    assert error.startswith("NullKeys: data task 20260103000000 task (")
    assert "by code)" in error
    assert "30 row(s) have a NULL key" in error


# 4. Composite keys, paged by row value comparison.


def test_composite_keys_page_by_row_value_in_both_shapes(db_runtime: Runtime) -> None:
    engine = db_runtime.engine
    execute(
        engine,
        "CREATE TABLE memberships (tenant_id INTEGER NOT NULL, id INTEGER NOT NULL, "
        "applied INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (tenant_id, id))",
    )
    rows = [{"t": t, "i": i} for t in range(1, 8) for i in range(1, 1 + 13 * t)]
    execute(engine, "INSERT INTO memberships (tenant_id, id) VALUES (:t, :i)", rows=rows)
    keyset = write_task(
        db_runtime,
        "20260104000000",
        """
        @keyset_backfill("memberships", key=("tenant_id", "id"), batch_size=9, parallel=3,
                         depends_on=[])
        def per_membership(session, first, last):
            assert isinstance(first, tuple) and isinstance(last, tuple), (first, last)
            session.execute(
                text("UPDATE memberships SET applied = applied + 1 "
                     "WHERE (tenant_id, id) >= (:t0, :i0) AND (tenant_id, id) <= (:t1, :i1)"),
                {"t0": first[0], "i0": first[1], "t1": last[0], "i1": last[1]},
            )
        """,
    )
    rows_version = write_task(
        db_runtime,
        "20260104000100",
        """
        memberships = table("memberships", column("tenant_id"), column("id"))

        @row_iteration(select(memberships.c.tenant_id, memberships.c.id),
                       key=("tenant_id", "id"), batch_size=11, parallel=2, depends_on=[])
        def per_row(session, rows):
            session.execute(
                text("UPDATE memberships SET applied = applied + 10 "
                     "WHERE tenant_id = :t AND id = :i"),
                [{"t": row.tenant_id, "i": row.id} for row in rows],
            )
        """,
    )
    assert run(db_runtime, keyset).status == Status.SUCCEEDED
    assert run(db_runtime, rows_version).status == Status.SUCCEEDED
    assert counts(engine, "memberships") == {11: len(rows)}
    # The cursor and the bounds are stored as JSON lists.
    last_lane = lane(db_runtime, keyset, 2)
    assert decode_cursor(last_lane.upper) == [7, 91]
    assert last_lane.cursor == "[7,91]"


# 5. Key types: each one pages, and its cursor round-trips through the record.

BASE = datetime(2026, 3, 1, 12, 0, 0)
KEY_TYPES: dict[str, tuple[str, Any]] = {
    # name: (the SQLAlchemy type in the task file, the nth key)
    "integer": ("Integer()", lambda n: n * 7 - 100),
    "bigint": ("BigInteger()", lambda n: 2**40 + n * 3),
    "text": ("Text()", lambda n: f"key-{n * 37 % 101:03d}-{n}"),
    "uuid": ("Uuid()", lambda n: uuid.uuid5(uuid.NAMESPACE_OID, str(n))),
    "timestamp": ("DateTime()", lambda n: BASE + timedelta(seconds=n * 97.25)),
    "timestamptz": (
        "DateTime(timezone=True)",
        lambda n: (BASE + timedelta(hours=n * 5)).replace(tzinfo=UTC),
    ),
    "numeric": ("Numeric(12, 3)", lambda n: Decimal(n * 125) / 100 + 5),
}
# The key types a task file may spell, by how it spells them.
TYPES: dict[str, TypeEngine[Any]] = {
    "Integer()": Integer(),
    "BigInteger()": BigInteger(),
    "Text()": Text(),
    "Uuid()": Uuid(),
    "DateTime()": DateTime(),
    "DateTime(timezone=True)": DateTime(timezone=True),
    "Numeric(12, 3)": Numeric(12, 3),
}


# The generated tables use TEXT keys, which MariaDB cannot index without a length.
@pytest.mark.parametrize("db_runtime", ["postgresql", "sqlite"], indirect=True)
@pytest.mark.parametrize("key_type", sorted(KEY_TYPES))
def test_each_key_type_pages_every_row_once_in_both_shapes(
    db_runtime: Runtime, key_type: str
) -> None:
    engine = db_runtime.engine
    type_source, nth = KEY_TYPES[key_type]
    # Created the way an application's models create it: uuid and times are text on SQLite,
    # in their key order.
    typed = Table(
        "typed",
        MetaData(),
        Column("k", TYPES[type_source], primary_key=True),
        Column("applied", Integer, nullable=False),
    )
    typed.create(engine)
    with engine.begin() as connection:
        keys = [{"k": nth(n), "applied": 0} for n in range(1, 61)]
        connection.execute(typed.insert(), keys)
    keyset = write_task(
        db_runtime,
        "20260105000000",
        """
        @keyset_backfill("typed", key="k", batch_size=7, parallel=2, depends_on=[])
        def by_bounds(session, first, last):
            session.execute(text("UPDATE typed SET applied = applied + 1 "
                                 "WHERE k >= :a AND k <= :b"), {"a": first, "b": last})
        """,
    )
    rows_version = write_task(
        db_runtime,
        "20260105000100",
        f"""
        typed = Table("typed", MetaData(), Column("k", {type_source}, primary_key=True),
                      Column("applied", Integer))

        @row_iteration(select(typed.c.k), key="k", batch_size=8, parallel=2, depends_on=[])
        def by_rows(session, rows):
            session.execute(
                typed.update().where(typed.c.k.in_([row.k for row in rows]))
                .values(applied=typed.c.applied + 10)
            )
        """,
    )
    assert run(db_runtime, keyset).status == Status.SUCCEEDED
    assert run(db_runtime, rows_version).status == Status.SUCCEEDED
    assert counts(engine, "typed") == {11: 60}
    for version in (keyset, rows_version):
        stored = lane(db_runtime, version, 1).cursor
        assert stored is not None
        assert encode_cursor(decode_cursor(stored)) == stored


# 6. A run is bounded: it ends at the largest key present when it started.


@pytest.mark.parametrize("follow", [False, True])
@pytest.mark.parametrize("shape", ["keyset_backfill", "row_iteration"])
def test_rows_inserted_during_a_run_are_left_to_the_next_unless_it_follows_them(
    db_runtime: Runtime, shape: str, follow: bool
) -> None:
    engine = db_runtime.engine
    execute(
        engine,
        "CREATE TABLE items (id INTEGER PRIMARY KEY, applied INTEGER NOT NULL DEFAULT 0)",
    )
    execute(engine, "INSERT INTO items (id) VALUES (:id)", rows=[{"id": i} for i in range(1, 501)])
    options = f"batch_size=50, parallel=2, follow_new_rows={follow}, depends_on=[]"
    if shape == "keyset_backfill":
        declaration = f"""
        @keyset_backfill("items", {options})
        def count(session, first, last):
            session.execute(text("UPDATE items SET applied = applied + 1 "
                                 "WHERE id BETWEEN :a AND :b"), {{"a": first, "b": last}})
        """
    else:
        declaration = f"""
        items = table("items", column("id"))

        @row_iteration(select(items.c.id), {options})
        def count(session, rows):
            session.execute(text("UPDATE items SET applied = applied + 1 WHERE id = :id"),
                            [{{"id": row.id}} for row in rows])
        """
    version = write_task(db_runtime, "20260106000000", declaration)
    inserted: list[int] = []

    def insert_more(_summary: dict[str, Any]) -> None:
        # After each of the first chunks, 20 rows with keys above every key the run started with.
        if len(inserted) < 60:
            new = [{"id": 1000 + len(inserted) + i} for i in range(20)]
            execute(engine, "INSERT INTO items (id) VALUES (:id)", rows=new)
            inserted.extend(row["id"] for row in new)

    finished = operations.run_inline(db_runtime, version, batches_per_chunk=2, on_chunk=insert_more)

    assert finished.status == Status.SUCCEEDED
    assert len(inserted) == 60
    with engine.connect() as connection:
        old = connection.execute(text("SELECT applied FROM items WHERE id <= 500")).scalars()
        new = connection.execute(text("SELECT applied FROM items WHERE id > 500")).scalars()
        assert set(old) == {1}
        assert set(new) == ({1} if follow else {0})


def test_cursors_round_trip_canonically_and_old_cursors_still_read() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    samples: list[Any] = [
        7,
        "abc",
        [3, "x"],
        uuid.UUID(int=5),
        moment,
        moment.replace(tzinfo=None),
        Decimal("1.50"),
        (1, uuid.UUID(int=9)),
        {"data_tasks": "finished"},
    ]
    for value in samples:
        stored = encode_cursor(value)
        assert encode_cursor(decode_cursor(stored)) == stored, value
    assert encode_cursor(7) == "7" and encode_cursor("abc") == '"abc"'
    assert decode_cursor("400") == 400 and decode_cursor('{"id":7}') == {"id": 7}
    # Equal cursors, equal text: the compare-and-set compares text.
    assert encode_cursor(Decimal("1.5")) == encode_cursor(Decimal("1.500"))
    east = moment.astimezone(timezone(timedelta(hours=5)))
    assert encode_cursor(east) == encode_cursor(moment)
    assert (
        encode_cursor(uuid.UUID(int=5)) == '{"t":"uuid","v":"00000000-0000-0000-0000-000000000005"}'
    )
    assert decode_cursor(encode_cursor((1, uuid.UUID(int=9)))) == [1, uuid.UUID(int=9)]
