"""Paging by a key: one column, or several compared as a row value, and a run's key ranges."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, bindparam, case, func, or_, select, tuple_
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


def cut_ranges(
    session: Session, keys: Select[Any], parts: int, follow: bool, about: str
) -> list[KeyRange]:
    """Cut the keys (columns labelled k0, k1...) into `parts` ranges of about equal size.

    The last range ends at the largest key present now, unless the run follows new rows.
    Refuses (NullKeys, before any write) when a key is NULL.
    """
    every = keys.subquery()
    columns = list(every.c)
    positions = list(range(len(columns)))
    is_null = or_(*(column.is_(None) for column in columns))
    total, nulls = session.execute(
        select(func.count(), func.coalesce(func.sum(case((is_null, 1), else_=0)), 0))
    ).one()
    if nulls:
        raise NullKeys(
            f"{about}: {nulls} row(s) have a NULL key, which has no place in key order; "
            "filter them out (key IS NOT NULL) or page by a NOT NULL key"
        )
    if not total:
        return [KeyRange(lower=None, upper=None, total=0, empty=not follow)]
    ordered = select(*columns).order_by(*columns)
    # Read by ORDER BY and LIMIT, not max(): PostgreSQL has no max(uuid), nor of a row value.
    largest = key_of(
        session.execute(select(*columns).order_by(*(c.desc() for c in columns)).limit(1)).one(),
        positions,
    )
    cuts: list[tuple[int, Any]] = []
    for at in sorted({total * part // parts for part in range(1, parts)} - {0}):
        # The last key of each range but the last, read at its offset in key order.
        bound = key_of(session.execute(ordered.offset(at - 1).limit(1)).one(), positions)
        # A key repeated across a cut stays in one range: equal bounds would make empty lanes.
        if (not cuts or bound != cuts[-1][1]) and (follow or bound != largest):
            cuts.append((at, bound))
    offsets = [at for at, _ in cuts]
    bounds = [bound for _, bound in cuts]
    uppers = [*bounds, None if follow else largest]
    lowers = [None, *bounds]
    sizes = [b - a for a, b in zip([0, *offsets], [*offsets, total], strict=True)]
    return [
        KeyRange(lower=lower, upper=upper, total=size)
        for lower, upper, size in zip(lowers, uppers, sizes, strict=True)
    ]
