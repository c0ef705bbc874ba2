"""Data tasks over a Django QuerySet: each batch gets a QuerySet, or a page of model instances.

They page by the model's primary key with the core's keyset machinery: the QuerySet's own
SQL stands for the table, so its filters, joins and annotations decide which keys are covered.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from django.db import models, transaction
from sqlalchemy import BigInteger, String, Uuid, column, text
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import NamedFromClause
from sqlalchemy.types import TypeEngine

from data_tasks.data_task import Batch, Options
from data_tasks.errors import DataTaskError
from data_tasks.shapes import KeysetBackfill, task_options
from data_tasks_django import conf

# Django's placeholder, and its escaped percent sign, in the SQL it compiles for psycopg.
_PLACEHOLDER = re.compile(r"(%s|%%)")
_INTEGER_FIELDS = (models.AutoField, models.BigAutoField, models.IntegerField)


class OutsideBatch(DataTaskError):
    """A Django task's batch ran outside the runner's transaction on the project's connection."""


def key_type(field: models.Field[Any, Any]) -> TypeEngine[Any]:
    """The SQLAlchemy type of a primary key, for its bound cursor values."""
    if isinstance(field, _INTEGER_FIELDS):
        return BigInteger()
    if isinstance(field, models.UUIDField):
        return Uuid()
    return String()


def queryset_source(queryset: models.QuerySet[Any], alias: str) -> NamedFromClause:
    """The primary keys the QuerySet selects, as an SQLAlchemy subquery named after its table.

    Django's SQL and parameters are kept as they are: only its placeholders become
    SQLAlchemy's, so values are bound by the driver, never pasted into the text.
    """
    meta = queryset.model._meta  # the documented Model _meta API
    keys = queryset.order_by().values_list("pk", flat=True)
    sql, params = keys.query.get_compiler(using=alias).as_sql()
    pieces: list[str] = []
    bound: dict[str, Any] = {}
    for piece in _PLACEHOLDER.split(sql):
        if piece == "%s":
            name = f"queryset_{len(bound)}"
            bound[name] = params[len(bound)]
            pieces.append(f":{name}")
        elif piece == "%%":
            pieces.append("%")
        else:
            pieces.append(piece.replace(":", "\\:"))
    # Django labels the one column as it likes ("pk"): name it after the key column here.
    name = meta.pk.column
    quoted = '"' + name.replace('"', '""') + '"'
    wrapped = f"SELECT queryset.key AS {quoted} FROM ({''.join(pieces)}) AS queryset(key)"
    statement = text(wrapped).bindparams(**bound)
    key = column(name, key_type(meta.pk))
    return statement.columns(key).subquery(meta.db_table)


class QuerySetBackfill(KeysetBackfill):
    """Batches of a QuerySet's primary keys; the function gets the batch as a QuerySet."""

    def __init__(
        self,
        function: Callable[..., Any],
        options: Options,
        queryset: models.QuerySet[Any],
        instances: bool,
    ) -> None:
        self.alias = conf.database_alias()
        if queryset.db != self.alias:
            raise ValueError(
                f"the QuerySet reads database {queryset.db!r}; the data tasks run on "
                f"{self.alias!r} (DATA_TASKS['DATABASE']): use .using({self.alias!r})"
            )
        meta = queryset.model._meta
        source = queryset_source(queryset, self.alias)
        super().__init__(function, options, meta.db_table, meta.pk.column, None, source)
        self.queryset = queryset
        # True: the function gets a list of model instances in key order (row iteration).
        self.instances = instances
        self.shape = "queryset row iteration" if instances else "queryset backfill"

    def apply(self, session: Session, batch: Batch) -> Any:
        """Call the function with the batch's QuerySet, inside the runner's atomic block."""
        if not transaction.get_connection(self.alias).in_atomic_block:
            raise OutsideBatch(
                f"data task {self.version} {self.name} writes through the Django ORM: run it "
                "from the project's own Celery app or `manage.py data_tasks`, whose batches "
                "share Django's transaction"
            )
        low, high = batch.payload
        page = self.queryset.filter(pk__gte=low, pk__lte=high)
        return self.function(list(page.order_by("pk")) if self.instances else page)


Decorator = Callable[[Callable[..., Any]], QuerySetBackfill]


def _decorator(
    queryset: models.QuerySet[Any],
    instances: bool,
    batch_size: int | None,
    target_batch_seconds: float | None,
    batch_bounds: tuple[int, int],
    depends_on: Sequence[str] | None,
    chunk_seconds: float | None,
    max_attempts: int | None,
    parallel: int,
    follow_new_rows: bool,
) -> Decorator:
    def wrap(function: Callable[..., Any]) -> QuerySetBackfill:
        options = task_options(
            depends_on,
            batch_size,
            target_batch_seconds,
            chunk_seconds,
            max_attempts,
            parallel,
            batch_bounds,
            follow_new_rows,
        )
        return QuerySetBackfill(function, options, queryset, instances)

    return wrap


def keyset_backfill(
    queryset: models.QuerySet[Any],
    *,
    batch_size: int | None = None,
    target_batch_seconds: float | None = None,
    min_batch_size: int = Options.min_batch_size,
    max_batch_size: int = Options.max_batch_size,
    depends_on: Sequence[str] | None = None,
    chunk_seconds: float | None = None,
    max_attempts: int | None = None,
    parallel: int = 1,
    follow_new_rows: bool = False,
) -> Decorator:
    """Declare a backfill over a QuerySet: `fn(batch)` gets each batch as a QuerySet.

    Batches are `batch_size` primary keys of the QuerySet in key order (adaptive, from 1,000,
    when no batch_size is set); the batch QuerySet keeps the QuerySet's filters. Its writes
    commit with the batch's cursor, exactly once.
    """
    bounds = (min_batch_size, max_batch_size)
    return _decorator(
        queryset,
        False,
        batch_size,
        target_batch_seconds,
        bounds,
        depends_on,
        chunk_seconds,
        max_attempts,
        parallel,
        follow_new_rows,
    )


def row_iteration(
    queryset: models.QuerySet[Any],
    *,
    batch_size: int | None = None,
    target_batch_seconds: float | None = None,
    min_batch_size: int = Options.min_batch_size,
    max_batch_size: int = Options.max_batch_size,
    depends_on: Sequence[str] | None = None,
    chunk_seconds: float | None = None,
    max_attempts: int | None = None,
    parallel: int = 1,
    follow_new_rows: bool = False,
) -> Decorator:
    """Declare a row iteration over a QuerySet: `fn(instances)` gets each page of models.

    Pages are `batch_size` model instances in primary key order (adaptive, from 1,000, when no
    batch_size is set); whatever `fn` saves commits with the page's cursor, exactly once.
    """
    bounds = (min_batch_size, max_batch_size)
    return _decorator(
        queryset,
        True,
        batch_size,
        target_batch_seconds,
        bounds,
        depends_on,
        chunk_seconds,
        max_attempts,
        parallel,
        follow_new_rows,
    )
