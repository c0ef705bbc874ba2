"""The shapes a data task comes in, each a decorator over the author's function."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import (
    FromClause,
    Integer,
    Select,
    TableClause,
    bindparam,
    column,
    func,
    select,
    table,
    tablesample,
    text,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import NamedFromClause

from data_tasks.data_task import (
    DEFAULT_TARGET_BATCH_SECONDS,
    FINISHED,
    Batch,
    DataTask,
    KeyRange,
    Options,
    as_versions,
)
from data_tasks.paging import Keys, cut_ranges, key_of, sample_percent


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


def _key_names(key: str | Sequence[str]) -> list[str]:
    names = [key] if isinstance(key, str) else [str(name) for name in key]
    if not names:
        raise ValueError("key names no column")
    return names


class KeysetBackfill(DataTask):
    """Batches of `batch_size` keys of a table in key order; the function gets their bounds."""

    shape = "keyset backfill"

    def __init__(
        self,
        function: Callable[..., Any],
        options: Options,
        table_name: str,
        key: str | Sequence[str],
        where: str | None,
        source: NamedFromClause | None = None,
    ) -> None:
        super().__init__(function, options)
        schema, _, name = table_name.rpartition(".")
        names = _key_names(key)
        # A query standing for the table (a Django QuerySet's SQL) has the key among its columns.
        self.table = (
            table(name, *(column(n) for n in names), schema=schema or None)
            if source is None
            else source
        )
        self.keys = Keys([self.table.c[n] for n in names])
        self.positions = list(range(len(names)))
        self.where = where
        self._plans = {
            (first, open_): self._plan_statement(first, open_)
            for first in (True, False)
            for open_ in (True, False)
        }

    def _key_select(self, source: FromClause | None = None) -> Select[Any]:
        """Every key the task covers (in `source`: the table or a sample of it), as columns
        labelled k0, k1..."""
        source = self.table if source is None else source
        keys = select(*(source.c[c.name].label(f"k{i}") for i, c in enumerate(self.keys.columns)))
        if self.where:
            keys = keys.where(text(f"({self.where})"))
        return keys

    def _sample(self, session: Session) -> Select[Any] | None:
        """The keys of SAMPLED_PAGES of the table's pages read at random (PostgreSQL's
        TABLESAMPLE SYSTEM), whatever the table's size; None for a query standing for it."""
        if not isinstance(self.table, TableClause):
            return None
        percent = sample_percent(session, self.table)
        # Aliased as the table itself, so that a `where` naming the table still reads.
        sampled = tablesample(self.table, func.system(percent), name=self.table.name)
        return self._key_select(sampled)

    def ranges(self, session: Session, parts: int) -> list[KeyRange]:
        """`parts` ranges of about equal numbers of keys, up to the largest key now."""
        by = ", ".join(c.name for c in self.keys.columns)
        about = (
            f"data task {self.version} {self.name} (keyset_backfill of {self.table.name} by {by})"
        )
        follow = self.options.follow_new_rows
        return cut_ranges(session, self._key_select(), parts, follow, about, self._sample)

    def plan(
        self, session: Session, cursor: Any, batch_size: int, upper: Any = None
    ) -> Batch | None:
        """The first and last of the next `batch_size` keys, read in one index-ordered query."""
        statement, parameters = self.next_keys(cursor, batch_size, upper)
        # The keys themselves, not min() and max(): those do not exist for uuid on PostgreSQL
        # nor for a row value.
        keys = session.connection().execute(statement, parameters).all()
        if not keys:
            return None
        first, last = key_of(keys[0], self.positions), key_of(keys[-1], self.positions)
        return Batch(next_cursor=last, size=len(keys), payload=(first, last))

    def next_keys(
        self, cursor: Any, batch_size: int, upper: Any = None
    ) -> tuple[Select[Any], dict[str, Any]]:
        """The query of the next batch's keys (labelled k0, k1... in key order) and its values."""
        parameters = {
            **self.keys.parameters("plan_after", cursor),
            **self.keys.parameters("plan_upper", upper),
            "plan_limit": batch_size,
        }
        return self._plans[(cursor is None, upper is None)], parameters

    def _plan_statement(self, from_start: bool, unbounded: bool) -> Select[Any]:
        # Built once per task: the plan runs once per batch, and building it each time cost
        # about as much as the query.
        keys = self._key_select().where(self.keys.not_null())
        if not from_start:
            keys = keys.where(self.keys.after("plan_after"))
        if not unbounded:
            keys = keys.where(self.keys.at_most("plan_upper"))
        return keys.order_by(*self.keys.columns).limit(bindparam("plan_limit", type_=Integer()))

    def apply(self, session: Session, batch: Batch) -> Any:
        """Call the function with the session and the inclusive bounds."""
        low, high = batch.payload
        return self.function(session, low, high)


class RowIteration(DataTask):
    """A select() paged by a key; the function gets each page of rows.

    A page never ends inside a key: all rows of a key are in the same page, so a key that a
    join repeats is applied once, in one page.
    """

    shape = "row iteration"

    def __init__(
        self,
        function: Callable[..., Any],
        options: Options,
        query: Select[Any],
        key: str | Sequence[str],
    ) -> None:
        super().__init__(function, options)
        # The pages follow the key's order: any other order would skip and repeat rows.
        if not query.compare(query.order_by(None)):
            raise ValueError("row_iteration pages by its key; remove .order_by(...)")
        if not query.compare(query.limit(None).offset(None)):
            raise ValueError("row_iteration pages by its key; remove .limit(...) and .offset(...)")
        self.query = query
        names = [c.key for c in query.selected_columns]
        wanted = _key_names(key)
        for name in wanted:
            if name not in names:
                raise ValueError(f"key {name!r} is not among the selected columns {names}")
        self.positions = [names.index(name) for name in wanted]
        self.keys = Keys([query.selected_columns[name] for name in wanted])
        self._pages = {
            (first, open_): self._page_statement(first, open_)
            for first in (True, False)
            for open_ in (True, False)
        }
        self._one_key = self.query.where(self.keys.equals("page_key"))

    def ranges(self, session: Session, parts: int) -> list[KeyRange]:
        """`parts` ranges of about equal numbers of rows, up to the largest key now."""
        every = self.query.subquery()
        keys = select(*(every.c[p].label(f"k{i}") for i, p in enumerate(self.positions)))
        by = ", ".join(str(c.key) for c in self.keys.columns)
        about = f"data task {self.version} {self.name} (row_iteration by {by})"
        return cut_ranges(session, keys, parts, self.options.follow_new_rows, about)

    def plan(
        self, session: Session, cursor: Any, batch_size: int, upper: Any = None
    ) -> Batch | None:
        """Read the next page of rows: `batch_size` rows, or more to finish its last key."""
        statement = self._pages[(cursor is None, upper is None)]
        parameters = {
            **self.keys.parameters("page_after", cursor),
            **self.keys.parameters("page_upper", upper),
            # One row more than the page, to see whether its last key goes on after it.
            "page_limit": batch_size + 1,
        }
        rows = session.connection().execute(statement, parameters).all()
        if not rows:
            return None
        if len(rows) > batch_size and self._key(rows[batch_size]) == self._key(
            rows[batch_size - 1]
        ):
            # The page would end inside its last key: leave that key to the next page, or,
            # when the page holds nothing else, take every row of it.
            last = self._key(rows[batch_size - 1])
            before = [row for row in rows[:batch_size] if self._key(row) != last]
            parameters = self.keys.parameters("page_key", last)
            rows = before or list(session.connection().execute(self._one_key, parameters))
        else:
            rows = rows[:batch_size]
        return Batch(next_cursor=self._key(rows[-1]), size=len(rows), payload=rows)

    def _key(self, row: Sequence[Any]) -> Any:
        return key_of(row, self.positions)

    def _page_statement(self, from_start: bool, unbounded: bool) -> Select[Any]:
        # Built once per task, like the keyset plan: it runs once per batch.
        query = self.query.where(self.keys.not_null())
        if not from_start:
            query = query.where(self.keys.after("page_after"))
        if not unbounded:
            query = query.where(self.keys.at_most("page_upper"))
        return query.order_by(*self.keys.columns).limit(bindparam("page_limit", type_=Integer()))

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


def task_options(
    depends_on: Sequence[str] | None,
    batch_size: int | None,
    target_batch_seconds: float | None,
    chunk_seconds: float | None,
    max_attempts: int | None,
    parallel: int = 1,
    batch_bounds: tuple[int, int] = (Options.min_batch_size, Options.max_batch_size),
    follow_new_rows: bool = False,
    first_batch_size: int = Options.batch_size,
) -> Options:
    """The options of a shape's decorator, checked: a bad value raises ValueError.

    No batch_size means adaptive batches, starting at `first_batch_size`, aimed at
    target_batch_seconds (default DEFAULT_TARGET_BATCH_SECONDS). batch_size=N alone means
    exactly N keys or rows a batch; with target_batch_seconds too, N is where it starts.
    """
    if batch_size is None:
        batch_size = first_batch_size
        target_batch_seconds = target_batch_seconds or DEFAULT_TARGET_BATCH_SECONDS
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    if target_batch_seconds is not None and target_batch_seconds <= 0:
        raise ValueError(f"target_batch_seconds must be above 0, not {target_batch_seconds}")
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
