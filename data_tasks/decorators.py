"""The decorators a task file declares its data task with, one per shape, and their options."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Select
from sqlalchemy.orm import Session

from data_tasks.data_task import Options
from data_tasks.shapes import CustomBatches, KeysetBackfill, OneShot, RowIteration, task_options


def one_shot(
    *,
    depends_on: Sequence[str] | None = None,
    max_attempts: int | None = None,
) -> Callable[[Callable[[Session], Any]], OneShot]:
    """Declare a one-shot data task: `fn(session)`, run once in one transaction."""

    def wrap(function: Callable[[Session], Any]) -> OneShot:
        return OneShot(function, task_options(depends_on, 1, None, None, max_attempts))

    return wrap


def keyset_backfill(
    table_name: str,
    *,
    key: str | Sequence[str] = "id",
    where: str | None = None,
    batch_size: int | None = None,
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

    key may name several columns, ("tenant_id", "id"): the bounds are then tuples. A run whose
    keys include a NULL is refused at its start (filter them out with `where`).

    Without batch_size the batches are adaptive: the first has 1,000 keys, and each next one
    grows or shrinks toward target_batch_seconds (default 0.25 s) within min_batch_size and
    max_batch_size. batch_size=N means exactly N keys a batch.

    parallel=N splits the keys into N lanes at the start, run side by side by N chunk jobs.
    The run ends at the largest key present when it started; follow_new_rows=True also takes
    rows inserted meanwhile (and runs as long as they keep coming).
    """

    def wrap(function: Callable[[Session, Any, Any], Any]) -> KeysetBackfill:
        options = task_options(
            depends_on,
            batch_size,
            target_batch_seconds,
            chunk_seconds,
            max_attempts,
            parallel,
            (min_batch_size, max_batch_size),
            follow_new_rows,
            first_batch_size=1000,
        )
        return KeysetBackfill(function, options, table_name, key, where)

    return wrap


def row_iteration(
    query: Select[Any],
    *,
    key: str | Sequence[str] = "id",
    batch_size: int | None = None,
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

    The query must not have its own ORDER BY, LIMIT or OFFSET: pages follow the key. A page
    never ends inside a key, so all rows of a key a join repeats are in one page. key may
    name several columns; a run whose keys include a NULL is refused at its start.

    Without batch_size the pages are adaptive: the first has 500 rows, and each next one
    grows or shrinks toward target_batch_seconds (default 0.25 s) within min_batch_size and
    max_batch_size. batch_size=N means N rows a page.

    parallel=N splits the rows into N lanes at the start, run side by side by N chunk jobs.
    The run ends at the largest key present when it started; follow_new_rows=True also takes
    rows inserted meanwhile (and runs as long as they keep coming).
    """

    def wrap(function: Callable[[Session, Sequence[Any]], Any]) -> RowIteration:
        options = task_options(
            depends_on,
            batch_size,
            target_batch_seconds,
            chunk_seconds,
            max_attempts,
            parallel,
            (min_batch_size, max_batch_size),
            follow_new_rows,
            first_batch_size=500,
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
        return CustomBatches(
            function, task_options(depends_on, 1, None, chunk_seconds, max_attempts)
        )

    return wrap
