"""The shapes a data task comes in, each a decorator over the author's function."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import (
    Integer,
    Select,
    bindparam,
    column,
    func,
    literal_column,
    select,
    table,
    text,
)
from sqlalchemy.orm import Session

from data_tasks.data_task import FINISHED, Batch, DataTask, KeyRange, Options, as_versions


def cut_ranges(session: Session, keys: Select[Any], parts: int, follow: bool) -> list[KeyRange]:
    """Cut the keys (one column labelled k) into `parts` ranges of about equal size.

    The last range ends at the largest key present now, unless the run follows new rows.
    """
    every = keys.subquery()
    total, largest = session.execute(select(func.count(), func.max(every.c.k))).one()
    if not total:
        return [KeyRange(lower=None, upper=None, total=0, empty=not follow)]
    offsets = sorted({total * part // parts for part in range(1, parts)} - {0})
    ordered = select(every.c.k).order_by(every.c.k)
    # The last key of each range but the last, read at its offset in key order.
    bounds = [session.execute(ordered.offset(at - 1).limit(1)).scalar_one() for at in offsets]
    uppers = [*bounds, None if follow else largest]
    lowers = [None, *bounds]
    sizes = [b - a for a, b in zip([0, *offsets], [*offsets, total], strict=True)]
    return [
        KeyRange(lower=lower, upper=upper, total=size)
        for lower, upper, size in zip(lowers, uppers, sizes, strict=True)
    ]


class OneShot(DataTask):
    """A function of a session, run once in one transaction."""

    shape = "one-shot"

    def ranges(self, session: Session, parts: int) -> list[KeyRange]:
        """One unit of work."""
        return [KeyRange(lower=None, upper=None, total=1)]

    def plan(
        self, session: Session, cursor: Any, batch_size: int, upper: Any = None
    ) -> Batch | None:
        """The single batch, unless it has committed."""
        return None if cursor == FINISHED else Batch(next_cursor=FINISHED, size=1)

    def apply(self, session: Session, batch: Batch) -> Any:
        """Call the function with the session."""
        return self.function(session)


class KeysetBackfill(DataTask):
    """Batches of `batch_size` keys of a table in key order; the function gets their bounds."""

    shape = "keyset backfill"

    def __init__(
        self,
        function: Callable[..., Any],
        options: Options,
        table_name: str,
        key: str,
        where: str | None,
    ) -> None:
        super().__init__(function, options)
        schema, _, name = table_name.rpartition(".")
        self.table = table(name, column(key), schema=schema or None)
        self.key = self.table.c[key]
        self.where = where
        self._plans = {
            (first, open_): self._plan_statement(first, open_)
            for first in (True, False)
            for open_ in (True, False)
        }

    def _keys(self) -> Select[Any]:
        """Every key the task covers, as one column labelled k."""
        keys = select(self.key.label("k"))
        if self.where:
            keys = keys.where(text(f"({self.where})"))
        return keys

    def ranges(self, session: Session, parts: int) -> list[KeyRange]:
        """`parts` ranges of about equal numbers of keys, up to the largest key now."""
        return cut_ranges(session, self._keys(), parts, self.options.follow_new_rows)

    def plan(
        self, session: Session, cursor: Any, batch_size: int, upper: Any = None
    ) -> Batch | None:
        """The first and last of the next `batch_size` keys, read in one index-ordered query."""
        statement = self._plans[(cursor is None, upper is None)]
        parameters = {"plan_after": cursor, "plan_upper": upper, "plan_limit": batch_size}
        low, high, count = session.connection().execute(statement, parameters).one()
        if not count:
            return None
        return Batch(next_cursor=high, size=int(count), payload=(low, high))

    def _plan_statement(self, from_start: bool, unbounded: bool) -> Select[Any, Any, int]:
        # Built once per task: the plan runs once per batch, and building it each time cost
        # about as much as the query.
        keys = self._keys()
        if not from_start:
            keys = keys.where(self.key > bindparam("plan_after"))
        if not unbounded:
            keys = keys.where(self.key <= bindparam("plan_upper"))
        page = keys.order_by(self.key).limit(bindparam("plan_limit", type_=Integer())).subquery()
        return select(func.min(page.c.k), func.max(page.c.k), func.count(literal_column("*")))

    def apply(self, session: Session, batch: Batch) -> Any:
        """Call the function with the session and the inclusive bounds."""
        low, high = batch.payload
        return self.function(session, low, high)


class RowIteration(DataTask):
    """A select() paged by a key column; the function gets each page of rows."""

    shape = "row iteration"

    def __init__(
        self, function: Callable[..., Any], options: Options, query: Select[Any], key: str
    ) -> None:
        super().__init__(function, options)
        self.query = query
        names = [c.key for c in query.selected_columns]
        if key not in names:
            raise ValueError(f"key {key!r} is not among the selected columns {names}")
        self.key_index = names.index(key)
        self.key = query.selected_columns[key]
        self._pages = {
            (first, open_): self._page_statement(first, open_)
            for first in (True, False)
            for open_ in (True, False)
        }

    def ranges(self, session: Session, parts: int) -> list[KeyRange]:
        """`parts` ranges of about equal numbers of rows, up to the largest key now."""
        keys = select(self.query.subquery().c[self.key_index].label("k"))
        return cut_ranges(session, keys, parts, self.options.follow_new_rows)

    def plan(
        self, session: Session, cursor: Any, batch_size: int, upper: Any = None
    ) -> Batch | None:
        """Read the next page of rows."""
        statement = self._pages[(cursor is None, upper is None)]
        parameters = {"page_after": cursor, "page_upper": upper, "page_limit": batch_size}
        rows = session.connection().execute(statement, parameters).all()
        if not rows:
            return None
        return Batch(next_cursor=rows[-1][self.key_index], size=len(rows), payload=rows)

    def _page_statement(self, from_start: bool, unbounded: bool) -> Select[Any]:
        # Built once per task, like the keyset plan: it runs once per batch.
        query = self.query
        if not from_start:
            query = query.where(self.key > bindparam("page_after"))
        if not unbounded:
            query = query.where(self.key <= bindparam("page_upper"))
        return query.order_by(self.key).limit(bindparam("page_limit", type_=Integer()))

    def apply(self, session: Session, batch: Batch) -> Any:
        """Call the function with the session and the rows."""
        return self.function(session, batch.payload)


class CustomBatches(DataTask):
    """A function that does one batch from a JSON cursor and returns the next (None: finished).

    Its writes outside the database (files, APIs) happen at least once per batch: a batch
    cut off before it commits runs again from the same cursor.
    """

    shape = "custom"

    def plan(
        self, session: Session, cursor: Any, batch_size: int, upper: Any = None
    ) -> Batch | None:
        """One more call, until the function has said it is finished."""
        if cursor == FINISHED:
            return None
        return Batch(next_cursor=None, size=1, payload=cursor, cursor_from_apply=True)

    def apply(self, session: Session, batch: Batch) -> Any:
        """Call the function with the session and the cursor; it returns the next cursor."""
        return self.function(session, batch.payload)


def _options(
    depends_on: Sequence[str] | None,
    batch_size: int,
    target_batch_seconds: float | None,
    chunk_seconds: float | None,
    max_attempts: int | None,
    parallel: int = 1,
    batch_bounds: tuple[int, int] = (Options.min_batch_size, Options.max_batch_size),
    follow_new_rows: bool = False,
) -> Options:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    if parallel < 1:
        raise ValueError(f"parallel must be at least 1, not {parallel}")
    low, high = batch_bounds
    if not 1 <= low <= high:
        raise ValueError(f"need 1 <= min_batch_size <= max_batch_size, not {low} and {high}")
    return Options(
        depends_on=as_versions(depends_on),
        batch_size=batch_size,
        target_batch_seconds=target_batch_seconds,
        min_batch_size=low,
        max_batch_size=high,
        chunk_seconds=chunk_seconds,
        max_attempts=max_attempts,
        parallel=parallel,
        follow_new_rows=follow_new_rows,
    )


def one_shot(
    *,
    depends_on: Sequence[str] | None = None,
    max_attempts: int | None = None,
) -> Callable[[Callable[[Session], Any]], OneShot]:
    """Declare a one-shot data task: `fn(session)`, run once in one transaction."""

    def wrap(function: Callable[[Session], Any]) -> OneShot:
        return OneShot(function, _options(depends_on, 1, None, None, max_attempts))

    return wrap


def keyset_backfill(
    table_name: str,
    *,
    key: str = "id",
    where: str | None = None,
    batch_size: int = 1000,
    target_batch_seconds: float | None = None,
    min_batch_size: int = Options.min_batch_size,
    max_batch_size: int = Options.max_batch_size,
    depends_on: Sequence[str] | None = None,
    chunk_seconds: float | None = None,
    max_attempts: int | None = None,
    parallel: int = 1,
    follow_new_rows: bool = False,
) -> Callable[[Callable[[Session, Any, Any], Any]], KeysetBackfill]:
    """Declare a keyset backfill: `fn(session, first_key, last_key)` per batch of keys.

    parallel=N splits the keys into N lanes at the start, run side by side by N chunk jobs.
    The run ends at the largest key present when it started; follow_new_rows=True also takes
    rows inserted meanwhile (and runs as long as they keep coming).
    """

    def wrap(function: Callable[[Session, Any, Any], Any]) -> KeysetBackfill:
        options = _options(
            depends_on,
            batch_size,
            target_batch_seconds,
            chunk_seconds,
            max_attempts,
            parallel,
            (min_batch_size, max_batch_size),
            follow_new_rows,
        )
        return KeysetBackfill(function, options, table_name, key, where)

    return wrap


def row_iteration(
    query: Select[Any],
    *,
    key: str = "id",
    batch_size: int = 500,
    target_batch_seconds: float | None = None,
    min_batch_size: int = Options.min_batch_size,
    max_batch_size: int = Options.max_batch_size,
    depends_on: Sequence[str] | None = None,
    chunk_seconds: float | None = None,
    max_attempts: int | None = None,
    parallel: int = 1,
    follow_new_rows: bool = False,
) -> Callable[[Callable[[Session, Sequence[Any]], Any]], RowIteration]:
    """Declare a row iteration: `fn(session, rows)` per page of the query, paged by `key`.

    parallel=N splits the rows into N lanes at the start, run side by side by N chunk jobs.
    The run ends at the largest key present when it started; follow_new_rows=True also takes
    rows inserted meanwhile (and runs as long as they keep coming).
    """

    def wrap(function: Callable[[Session, Sequence[Any]], Any]) -> RowIteration:
        options = _options(
            depends_on,
            batch_size,
            target_batch_seconds,
            chunk_seconds,
            max_attempts,
            parallel,
            (min_batch_size, max_batch_size),
            follow_new_rows,
        )
        return RowIteration(function, options, query, key)

    return wrap


def custom_batches(
    *,
    depends_on: Sequence[str] | None = None,
    chunk_seconds: float | None = None,
    max_attempts: int | None = None,
) -> Callable[[Callable[[Session, Any], Any]], CustomBatches]:
    """Declare custom batches: `fn(session, cursor) -> next cursor or None when finished`."""

    def wrap(function: Callable[[Session, Any], Any]) -> CustomBatches:
        return CustomBatches(function, _options(depends_on, 1, None, chunk_seconds, max_attempts))

    return wrap
