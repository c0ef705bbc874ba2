"""Paging by a key: one column, or several compared as a row value, and a run's key ranges."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    TableClause,
    and_,
    bindparam,
    exists,
    func,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.orm import Session

from data_tasks.data_task import KeyRange
from data_tasks.errors import DataTaskError


class NullKeys(DataTaskError):
    """Rows whose key is NULL: a page ending on one would lose the cursor, so the run refuses."""


class Keys:
    """The key a shape pages by: its columns, compared as one value (a row value when several)."""

    def __init__(self, columns: Sequence[ColumnElement[Any]]) -> None:
        self.columns = list(columns)
        self.composite = len(self.columns) > 1

    def _parameter(self, name: str) -> ColumnElement[Any]:
        if not self.composite:
            return bindparam(name, type_=self.columns[0].type)
        return tuple_(*(bindparam(f"{name}_{i}", type_=c.type) for i, c in enumerate(self.columns)))

    def _value(self) -> ColumnElement[Any]:
        return tuple_(*self.columns) if self.composite else self.columns[0]

    def after(self, name: str) -> ColumnElement[bool]:
        """key > :name, the row value comparison when the key has several columns."""
        return self._value() > self._parameter(name)

    def at_most(self, name: str) -> ColumnElement[bool]:
        """key <= :name."""
        return self._value() <= self._parameter(name)

    def equals(self, name: str) -> ColumnElement[bool]:
        """key = :name."""
        return self._value() == self._parameter(name)

    def not_null(self) -> ColumnElement[bool]:
        """No column of the key is NULL: such a row has no place in key order."""
        return and_(*(column.is_not(None) for column in self.columns))

    def parameters(self, name: str, value: Any) -> dict[str, Any]:
        """The bound values of a key parameter (a decoded composite cursor is a list)."""
        if not self.composite:
            return {name: value}
        if value is None:
            return {f"{name}_{i}": None for i in range(len(self.columns))}
        return {f"{name}_{i}": part for i, part in enumerate(value)}


def key_of(row: Sequence[Any], positions: Sequence[int]) -> Any:
    """The key of a result row: one value, or a tuple for a composite key."""
    if len(positions) == 1:
        return row[positions[0]]
    return tuple(row[i] for i in positions)


# Below this many keys (by the planner's estimate) a run counts its keys and cuts its lanes
# exactly: that reads at most this many index entries. Above, it estimates and samples.
COUNTED_UP_TO = 100_000
# How many of a table's pages a sample for cutting lanes reads, at random: enough for lanes
# within a few percent of each other, and as many at 20 million rows as at 1 million.
SAMPLED_PAGES = 2_000

# The keys (labelled k0, k1...) of a sample of the task's rows, or None: none is cheap.
Sampler = Callable[[Session], Select[Any] | None]


def cut_ranges(
    session: Session,
    keys: Select[Any],
    parts: int,
    follow: bool,
    about: str,
    sample: Sampler | None = None,
) -> list[KeyRange]:
    """Cut the keys (columns labelled k0, k1...) into `parts` ranges of about equal size.

    The last range ends at the largest key present now, unless the run follows new rows.
    Refuses (NullKeys, before any write) when a key is NULL. Cheap at any size on PostgreSQL:
    the totals are the planner's estimate and the lanes are cut from a sample, unless the
    estimate is small enough to count; other databases count.
    """
    every = keys.subquery()
    columns = list(every.c)
    positions = list(range(len(columns)))
    _refuse_null_keys(session, every, about)
    # Read by ORDER BY and LIMIT, not max(): PostgreSQL has no max(uuid), nor of a row value.
    top = session.execute(select(*columns).order_by(*(c.desc() for c in columns)).limit(1))
    found = top.first()
    if found is None:
        return [KeyRange(lower=None, upper=None, total=0, empty=not follow)]
    largest = key_of(found, positions)
    estimate = estimated_rows(session, keys)
    if estimate is not None and estimate > COUNTED_UP_TO:
        if parts == 1:
            return [KeyRange(lower=None, upper=None if follow else largest, total=estimate)]
        query = sample(session) if sample else None
        sampled = (
            _sample_cuts(session, query, parts, estimate, positions) if query is not None else []
        )
        if sampled:
            return _ranges(sampled, estimate, largest, follow)
    total = int(session.execute(select(func.count()).select_from(every)).scalar_one())
    ordered = select(*columns).order_by(*columns)
    # The last key of each range but the last, read at its offset in key order.
    counted = [
        (at, key_of(session.execute(ordered.offset(at - 1).limit(1)).one(), positions))
        for at in sorted({total * part // parts for part in range(1, parts)} - {0})
    ]
    return _ranges(counted, total, largest, follow)


def _refuse_null_keys(session: Session, every: Any, about: str) -> None:
    """NullKeys when a key is NULL: EXISTS stops at the first (an index lookup on a key)."""
    is_null = or_(*(column.is_(None) for column in every.c))
    if not session.execute(select(exists().where(is_null))).scalar():
        return
    nulls = session.execute(select(func.count()).select_from(every).where(is_null)).scalar()
    raise NullKeys(
        f"{about}: {nulls} row(s) have a NULL key, which has no place in key order; "
        "filter them out (key IS NOT NULL) or page by a NOT NULL key"
    )


def estimated_rows(session: Session, query: Select[Any]) -> int | None:
    """The planner's estimate of the query's rows on PostgreSQL (no row is read), else None."""
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        return None
    # Rendered whole: an `in_([...])` of the author's query expands at execution otherwise.
    compiled = query.compile(
        dialect=connection.dialect, compile_kwargs={"render_postcompile": True}
    )
    plan = connection.exec_driver_sql(
        f"EXPLAIN (FORMAT JSON) {compiled.string}", compiled.params
    ).scalar_one()
    return int(plan[0]["Plan"]["Plan Rows"])


def sample_percent(session: Session, table: TableClause) -> float:
    """The percentage of the table's pages that is SAMPLED_PAGES (PostgreSQL), at most 100."""
    name = session.connection().dialect.identifier_preparer.format_table(table)
    pages = session.execute(
        text(
            "SELECT pg_relation_size(CAST(:name AS regclass)) / current_setting('block_size')::int"
        ),
        {"name": name},
    ).scalar_one()
    return min(100.0, 100.0 * SAMPLED_PAGES / max(1, int(pages)))


def _sample_cuts(
    session: Session, sample: Select[Any], parts: int, estimate: int, positions: list[int]
) -> list[tuple[int, Any]]:
    """(estimated keys up to the cut, the cut key) at each part's share of the sample.

    The database numbers the sampled keys in key order and returns the cut keys alone.
    """
    sampled = sample.subquery()
    columns = list(sampled.c)
    numbered = select(
        *columns,
        func.row_number().over(order_by=columns).label("i"),
        func.count().over().label("n"),
    ).subquery()
    i, n = numbered.c.i, numbered.c.n
    at_a_cut = or_(*(i == n * part // parts for part in range(1, parts)))
    rows = session.execute(select(numbered).where(at_a_cut).order_by(i)).all()
    return [(estimate * row.i // row.n, key_of(row, positions)) for row in rows]


def _ranges(cuts: list[tuple[int, Any]], total: int, largest: Any, follow: bool) -> list[KeyRange]:
    """The ranges between the cuts (each: keys before it, its key), the last up to `largest`."""
    kept: list[tuple[int, Any]] = []
    for at, bound in cuts:
        # A key repeated across a cut stays in one range: equal bounds would make empty lanes.
        if (not kept or bound != kept[-1][1]) and (follow or bound != largest):
            kept.append((at, bound))
    offsets = [at for at, _ in kept]
    bounds = [bound for _, bound in kept]
    uppers = [*bounds, None if follow else largest]
    lowers = [None, *bounds]
    sizes = [b - a for a, b in zip([0, *offsets], [*offsets, total], strict=True)]
    return [
        KeyRange(lower=lower, upper=upper, total=size)
        for lower, upper, size in zip(lowers, uppers, sizes, strict=True)
    ]
