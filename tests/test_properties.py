"""Generated tables and tasks: every eligible row is applied exactly once, or the run refuses.

Each example builds a table of its own (key type, gaps, NULL keys, repeated keys, a join, a
filter, an author's ORDER BY), writes a task file (keyset or row iteration, 1..4 lanes), and
runs it in-process in chunks of a drawn number of batches, with a drawn fence (the running
lane's epoch bumped between two batches, then a pause and a resume) and rows inserted during
the run. `HYPOTHESIS_PROFILE=fuzz` (`make fuzz`) runs many more examples than CI's profile.
"""

from __future__ import annotations

import itertools
import os
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    Table,
    Text,
    text,
    update,
)

from data_tasks import operations
from data_tasks.errors import DataTaskError
from data_tasks.lanes import TaskLane
from data_tasks.runtime import Runtime
from data_tasks.status import Status
from tests.running import meanwhile, record
from tests.test_soundness import TYPES, write_task

settings.register_profile(
    "ci",
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz",
    max_examples=2000,
    deadline=None,
    database=DirectoryBasedExampleDatabase(".pytest_cache/hypothesis"),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

BASE = datetime(2026, 3, 1, 12, 0, 0)
# Each key type: (its SQLAlchemy type as the task file spells it, an order-preserving map
# from a natural number to a key). A composite key adds a text column k2 after k.
KEY_TYPES: dict[str, tuple[str, Any]] = {
    "integer": ("Integer()", lambda n: n - 500),
    "bigint": ("BigInteger()", lambda n: 2**40 + n),
    "text": ("Text()", lambda n: f"k{n:06d}"),
    "uuid": ("Uuid()", lambda n: uuid.UUID(int=n * 2**80 + n)),
    "timestamp": ("DateTime()", lambda n: BASE + timedelta(microseconds=n * 250_000)),
    "timestamptz": (
        "DateTime(timezone=True)",
        lambda n: (BASE + timedelta(seconds=n * 3601)).replace(tzinfo=UTC),
    ),
    "numeric": ("Numeric(12, 3)", lambda n: Decimal(n) / 1000),
    "composite": ("Integer()", lambda n: n // 3),
}
_numbers = itertools.count(1)


@dataclass
class Scenario:
    """One generated table, task and run."""

    key_type: str
    keys: list[int | None]  # natural numbers mapped through the key type; None is NULL
    groups: list[int]  # g of each row: the filter keeps g <> 0
    children: list[int] | None  # rows joined to each row (row iteration over a join)
    shape: str
    filter_g: bool
    filter_nulls: bool
    author_order: bool
    parallel: int
    batch_size: int
    batches_per_chunk: int
    fence_at: int | None
    insert_after_chunk: int | None
    inserted: int
    follow: bool


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """A table, a task over it and how its run is interrupted."""
    shape = draw(st.sampled_from(["keyset_backfill", "row_iteration"]))
    nulls = draw(st.booleans())
    key = st.integers(0, 400)
    keys = draw(st.lists(st.none() | key if nulls else key, max_size=60))
    rows = len(keys)
    join = shape == "row_iteration" and draw(st.booleans())
    return Scenario(
        key_type=draw(st.sampled_from(sorted(KEY_TYPES))),
        keys=keys,
        groups=draw(st.lists(st.integers(0, 3), min_size=rows, max_size=rows)),
        children=draw(st.lists(st.integers(0, 3), min_size=rows, max_size=rows)) if join else None,
        shape=shape,
        filter_g=draw(st.booleans()),
        filter_nulls=nulls and draw(st.booleans()),
        author_order=shape == "row_iteration" and draw(st.integers(0, 9)) == 0,
        parallel=draw(st.integers(1, 4)),
        batch_size=draw(st.integers(1, 12)),
        batches_per_chunk=draw(st.integers(1, 4)),
        fence_at=draw(st.none() | st.integers(1, 12)),
        insert_after_chunk=draw(st.none() | st.integers(1, 4)),
        inserted=draw(st.integers(1, 5)),
        follow=draw(st.booleans()),
    )


def key_values(scenario: Scenario, number: int | None) -> dict[str, Any]:
    """The key columns of a row from its drawn number."""
    if number is None:
        return {"k": None, "k2": "x"}
    return {"k": KEY_TYPES[scenario.key_type][1](number), "k2": f"t{number:06d}"}


def build(engine: Engine, name: str, scenario: Scenario) -> tuple[Table, Table | None]:
    """Create the example's table (and the joined one), with every counter at 0."""
    metadata = MetaData()
    table = Table(
        name,
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("k", TYPES[KEY_TYPES[scenario.key_type][0]], nullable=True),
        Column("k2", Text, nullable=False),
        Column("g", Integer, nullable=False),
        Column("applied", Integer, nullable=False),
    )
    joined = None
    if scenario.children is not None:
        joined = Table(
            f"{name}_c",
            metadata,
            Column("id", Integer, primary_key=True, autoincrement=False),
            Column("parent", Integer, nullable=False),
            Column("applied", Integer, nullable=False),
        )
    metadata.create_all(engine)
    add_rows(engine, scenario, table, joined, scenario.keys, scenario.groups, scenario.children)
    return table, joined


def add_rows(
    engine: Engine,
    scenario: Scenario,
    table: Table,
    joined: Table | None,
    keys: list[int | None],
    groups: list[int],
    children: list[int] | None,
) -> None:
    """Insert rows (and their joined rows) after the ones already there."""
    with engine.begin() as connection:
        start = connection.execute(text(f"SELECT count(*) FROM {table.name}")).scalar_one()
        rows = [
            {"id": start + i, **key_values(scenario, key), "g": g, "applied": 0}
            for i, (key, g) in enumerate(zip(keys, groups, strict=True))
        ]
        if rows:
            connection.execute(table.insert(), rows)
        if joined is not None and children is not None:
            first = connection.execute(text(f"SELECT count(*) FROM {joined.name}")).scalar_one()
            ids = itertools.count(first)
            linked = [
                {"id": next(ids), "parent": start + i, "applied": 0}
                for i, many in enumerate(children)
                for _ in range(many)
            ]
            if linked:
                connection.execute(joined.insert(), linked)


def task_source(name: str, scenario: Scenario) -> str:
    """The task file a user would write for the scenario."""
    type_source = KEY_TYPES[scenario.key_type][0]
    composite = scenario.key_type == "composite"
    key = ("k", "k2") if composite else "k"
    options = (
        f"key={key!r}, batch_size={scenario.batch_size}, parallel={scenario.parallel}, "
        f"follow_new_rows={scenario.follow}, max_attempts=1, depends_on=[]"
    )
    filters = (["g <> 0"] if scenario.filter_g else []) + (
        ["k IS NOT NULL"] if scenario.filter_nulls else []
    )
    if scenario.shape == "keyset_backfill":
        where = " AND ".join(filters) or None
        bounds = (
            "(k, k2) >= (:a0, :a1) AND (k, k2) <= (:b0, :b1)"
            if composite
            else ("k >= :a AND k <= :b")
        )
        values = (
            '{"a0": a[0], "a1": a[1], "b0": b[0], "b1": b[1]}' if composite else '{"a": a, "b": b}'
        )
        condition = " AND ".join([bounds, *filters])
        return f"""
@keyset_backfill({name!r}, where={where!r}, {options})
def task(session, a, b):
    session.execute(text("UPDATE {name} SET applied = applied + 1 WHERE {condition}"), {values})
"""
    lines = [
        f"t = Table({name!r}, MetaData(), Column('id', Integer), Column('k', {type_source}),",
        "          Column('k2', Text()), Column('g', Integer), Column('applied', Integer))",
    ]
    if scenario.children is not None:
        lines += [
            f"c = Table('{name}_c', MetaData(), Column('id', Integer), Column('parent', Integer),",
            "          Column('applied', Integer))",
            "query = select(t.c.k, t.c.k2, c.c.id).join(c, c.c.parent == t.c.id)",
        ]
        target = "c"
    else:
        lines.append("query = select(t.c.k, t.c.k2, t.c.id)")
        target = "t"
    if scenario.filter_g:
        lines.append("query = query.where(t.c.g != 0)")
    if scenario.filter_nulls:
        lines.append("query = query.where(t.c.k.is_not(None))")
    if scenario.author_order:
        lines.append("query = query.order_by(t.c.g)")
    lines += [
        "",
        f"@row_iteration(query, {options})",
        "def task(session, rows):",
        "    ids = [row.id for row in rows]",
        f"    session.execute({target}.update().where({target}.c.id.in_(ids))"
        f".values(applied={target}.c.applied + 1))",
    ]
    return "\n".join(lines) + "\n"


def fence(runtime: Runtime, version: str) -> None:
    """Bump the epoch of the running lane: its next batch must not commit."""
    with runtime.session() as session, session.begin():
        session.execute(
            update(TaskLane)
            .where(TaskLane.version == version, TaskLane.status == "running")
            .values(epoch=TaskLane.epoch + 1)
        )


def run_scenario(runtime: Runtime, version: str, scenario: Scenario, grow: Any) -> Status:
    """Run the task to its end through fences and resumes; returns the final status."""
    asked = 0
    chunks = 0

    fences: list[threading.Thread] = []

    def should_stop() -> bool:
        nonlocal asked
        asked += 1
        if asked == scenario.fence_at:
            fences.append(meanwhile(runtime, lambda: fence(runtime, version), "UPDATE task_lanes"))
        return False

    def on_chunk(_summary: dict[str, Any]) -> None:
        nonlocal chunks
        chunks += 1
        if chunks == scenario.insert_after_chunk:
            grow()

    for _ in range(6):
        try:
            result = operations.run_inline(
                runtime,
                version,
                batches_per_chunk=scenario.batches_per_chunk,
                should_stop=should_stop,
                on_chunk=on_chunk,
                ignore_dependencies=True,
            )
        except DataTaskError:
            return record(runtime, version).state
        finally:
            for thread in fences:
                thread.join(timeout=30)
        if result.status in (Status.SUCCEEDED, Status.FAILED):
            return result.status
        # A fenced lane is left running with no job: pause and resume, as an operator would.
        operations.pause(runtime, version)
    raise AssertionError(f"{version} did not finish: {record(runtime, version).status}")


# The generated tables use TEXT keys, which MariaDB cannot index without a length.
@pytest.mark.parametrize("db_runtime", ["postgresql", "sqlite"], indirect=True)
@given(scenario=scenarios())
def test_every_eligible_row_is_applied_exactly_once_or_the_run_refuses(
    db_runtime: Runtime, scenario: Scenario
) -> None:
    number = next(_numbers)
    name = f"prop_{number}"
    version = f"2027{number:010d}"
    engine = db_runtime.engine
    table, joined = build(engine, name, scenario)
    top = max([key for key in scenario.keys if key is not None], default=0)
    new_keys: list[int | None] = list(range(top + 1, top + 1 + scenario.inserted))

    # Inserted rows are the run's when it follows new rows and its last lane is still open.
    followed: list[bool] = []

    def grow() -> None:
        with db_runtime.session() as session:
            last = (
                session.query(TaskLane)
                .filter_by(version=version)
                .order_by(TaskLane.lane.desc())
                .first()
            )
        followed.append(scenario.follow and last is not None and last.status != "succeeded")
        add_rows(
            engine,
            scenario,
            table,
            joined,
            new_keys,
            [1] * len(new_keys),
            [1] * len(new_keys) if joined is not None else None,
        )

    path = Path(db_runtime.settings.tasks_dir) / f"{version}_task.py"
    write_task(db_runtime, version, task_source(name, scenario))
    try:
        status = run_scenario(db_runtime, version, scenario, grow)
        with engine.connect() as connection:
            parents = connection.execute(
                text(f"SELECT id, k IS NULL, g, applied FROM {name} ORDER BY id")
            ).all()
            counted = (
                connection.execute(text(f"SELECT parent, applied FROM {name}_c")).all()
                if joined is not None
                else [(row[0], row[3]) for row in parents]
            )
    finally:
        path.unlink()
        with engine.begin() as connection:
            connection.execute(text(f"DROP TABLE IF EXISTS {name}_c"))
            connection.execute(text(f"DROP TABLE {name}"))
    # A NULL key is refused when the task's query or filter lets its row through.
    children = scenario.children or [1] * len(scenario.keys)
    nulls_left = not scenario.filter_nulls and any(
        key is None and (g != 0 or not scenario.filter_g) and many > 0
        for key, g, many in zip(scenario.keys, scenario.groups, children, strict=True)
    )
    refused = scenario.author_order or nulls_left
    original = len(scenario.keys)
    eligible = {
        row_id
        for row_id, is_null, g, _ in parents
        if not is_null
        and (g != 0 or not scenario.filter_g)
        and (row_id < original or followed == [True])
    }
    if refused:
        assert status == Status.FAILED
        assert {applied for _, applied in counted} <= {0}
        error = record(db_runtime, version).last_error or ""
        assert "\n" not in error
        assert "order_by" in error or "NULL key" in error, error
    else:
        assert status == Status.SUCCEEDED, record(db_runtime, version).last_error
        wrong = [
            (parent, applied)
            for parent, applied in counted
            if applied != (1 if parent in eligible else 0)
        ]
        assert not wrong, f"rows applied the wrong number of times: {wrong[:10]}"
