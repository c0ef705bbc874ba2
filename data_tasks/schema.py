"""The runner's own tables: created together, versioned, and upgraded in place.

`data_tasks_schema` holds the layout's version. A release that finds an older layout
upgrades it, in one transaction, keeping every record; one that finds a newer layout refuses
to touch it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    Table,
    column,
    inspect,
    select,
    table,
    text,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.schema import CreateColumn

from data_tasks.errors import DataTaskError
from data_tasks.history import TaskHistory
from data_tasks.lanes import LaneStatus, TaskLane
from data_tasks.layout import SCHEMA_VERSION as SCHEMA_VERSION
from data_tasks.records import Base, TaskRecord
from data_tasks.status import DONE, Status


class SchemaVersion(Base):
    """The version of the runner's table layout (one row)."""

    __tablename__ = "data_tasks_schema"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


TABLES = (
    TaskRecord.__table__,
    TaskLane.__table__,
    TaskHistory.__table__,
    SchemaVersion.__table__,
)


class SchemaTooNew(DataTaskError):
    """The records were written by a newer release than this one."""

    def __init__(self, found: int) -> None:
        super().__init__(
            f"the data task records are in layout {found}, newer than this release's "
            f"{SCHEMA_VERSION}: deploy the newer release (or restore the records)"
        )


def create_tables(engine: Engine) -> None:
    """Create the runner's tables, or upgrade an older release's in place."""
    with engine.begin() as connection:
        found = layout_version(connection)
        if found > SCHEMA_VERSION:
            raise SchemaTooNew(found)
        if found == SCHEMA_VERSION:
            return
        Base.metadata.create_all(connection, tables=list(TABLES))  # type: ignore[arg-type]
        # A new database needs nothing more; an older layout goes up one version at a time.
        for step in range(found, SCHEMA_VERSION) if found else ():
            UPGRADES[step](connection)
        versions = cast(Table, SchemaVersion.__table__)
        connection.execute(versions.delete())
        connection.execute(versions.insert().values(id=1, version=SCHEMA_VERSION))


def layout_version(connection: Connection) -> int:
    """The layout of the tables present: 0 when there are none, 1 for 0.1.0's."""
    names = set(inspect(connection).get_table_names())
    if "task_records" not in names:
        return 0
    if "data_tasks_schema" not in names:
        return 1
    found = connection.execute(select(SchemaVersion.version)).scalar()
    return int(found) if found is not None else 1


def _lanes_from_records(connection: Connection) -> None:
    """0.1.0 -> lanes: each open task's cursor (or its shards) becomes its lanes.

    Old runners are fenced first: every queued or running record moves to a new epoch, which
    waits for a batch in flight to commit and makes the old runner's next compare-and-set
    fail. Those records wait `enqueued` with no queued marker, so the first sweep publishes
    their lanes. An upgraded run has no end key: it follows new rows, as 0.1.0 runs did.
    """
    records = table(
        "task_records",
        column("version"),
        column("status"),
        column("epoch"),
        column("cursor"),
        column("processed"),
        column("total"),
        column("batch_size"),
    )
    in_flight = [Status.ENQUEUED.value, Status.RUNNING.value]
    connection.execute(
        update(records)
        .where(records.c.status.in_(in_flight))
        .values(epoch=records.c.epoch + 1, status=Status.ENQUEUED.value)
    )
    done = [status.value for status in DONE]
    open_records = connection.execute(
        select(records).where(records.c.status.not_in(done))
    ).mappings()
    shards = _old_shards(connection)
    lanes: list[dict[str, Any]] = []
    for record in open_records:
        if record["version"] in shards:
            lanes += shards[record["version"]]
        elif record["cursor"] is not None or record["processed"]:
            lanes.append(
                _lane(
                    record["version"],
                    0,
                    cursor=record["cursor"],
                    processed=record["processed"] or 0,
                    total=record["total"],
                    batch_size=record["batch_size"],
                )
            )
    if lanes:
        connection.execute(cast(Table, TaskLane.__table__).insert(), lanes)


def _old_shards(connection: Connection) -> dict[str, list[dict[str, Any]]]:
    """0.1.0's task_shards rows as lanes, by version (none when it had no sharded task)."""
    if "task_shards" not in inspect(connection).get_table_names():
        return {}
    shards = table(
        "task_shards",
        *(
            column(name)
            for name in (
                "version",
                "shard",
                "status",
                "lower",
                "upper",
                "cursor",
                "processed",
                "total",
                "batch_size",
            )
        ),
    )
    found: dict[str, list[dict[str, Any]]] = {}
    for row in connection.execute(select(shards).order_by(shards.c.version, shards.c.shard)):
        lane = _lane(
            row.version,
            row.shard,
            cursor=row.cursor,
            processed=row.processed or 0,
            total=row.total,
            batch_size=row.batch_size,
            lower=row.lower,
            upper=row.upper,
            finished=row.status == "succeeded",
        )
        found.setdefault(row.version, []).append(lane)
    return found


def _lane(version: str, number: int, *, finished: bool = False, **values: Any) -> dict[str, Any]:
    """A planned lane row carrying an upgraded run's progress."""
    status = LaneStatus.SUCCEEDED if finished else LaneStatus.ENQUEUED
    row = {"lower": None, "upper": None, **values}
    return {
        "version": version,
        "lane": number,
        "epoch": 0,
        "status": status.value,
        "planned": True,
        "attempts": 0,
        **row,
    }


def _notices_sent_at_least_once(connection: Connection) -> None:
    """2 -> 3: task_history learns which notices were sent; every earlier one counts as sent."""
    history = cast(Table, TaskHistory.__table__)
    present = {found["name"] for found in inspect(connection).get_columns("task_history")}
    # From layout 1, create_all has just made task_history with these columns already.
    for name in sorted({"notice_sent_at", "notice_attempts"} - present):
        definition = CreateColumn(history.c[name]).compile(dialect=connection.dialect)
        connection.execute(text(f"ALTER TABLE task_history ADD COLUMN {definition}"))
    connection.execute(update(history).values(notice_sent_at=history.c.at))


# UPGRADES[n] takes a layout from version n to n + 1.
UPGRADES: dict[int, Callable[[Connection], None]] = {
    1: _lanes_from_records,
    2: _notices_sent_at_least_once,
}
