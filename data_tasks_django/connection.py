"""Batches on the Django project's own connection, inside its transaction.atomic block.

The runner's SQLAlchemy session borrows the very psycopg connection Django holds for the alias,
so the compare-and-set that fences a batch, the author's ORM writes and the cursor advance are
one transaction: committed together or rolled back together.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import django
from django.apps import apps
from django.db import connections, transaction
from sqlalchemy import Connection, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import SingletonThreadPool

from data_tasks.discovery import Catalog
from data_tasks.runtime import Runtime, StatementHook
from data_tasks_django import conf


class Borrowed:
    """Django's DBAPI connection, lent to SQLAlchemy: everything but close() goes through.

    Django opens, closes and replaces its connection (CONN_MAX_AGE, Celery's fixup after each
    job); SQLAlchemy must never close it under Django.
    """

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)

    def close(self) -> None:
        """Left to Django, which owns the connection."""


class DjangoConnection:
    """The BatchHost of a Django project: its alias's connection and transaction.atomic."""

    def __init__(self, alias: str, idle_seconds: float) -> None:
        self.alias = alias
        self.idle_milliseconds = max(1, round(idle_seconds * 1000))
        # One borrowed connection per thread, as Django keeps one per thread.
        self.engine = create_engine(
            conf.database_url(alias),
            creator=self.borrow,
            poolclass=SingletonThreadPool,
            # psycopg looks hstore up only on a connection of its own class, not a borrowed one.
            use_native_hstore=False,
        )
        event.listen(self.engine, "checkout", self.still_current)

    def borrow(self) -> Borrowed:
        """Django's connection for the alias in this thread, opened if it was not."""
        connection = connections[self.alias]
        connection.ensure_connection()
        raw = connection.connection
        with raw.cursor() as cursor:
            # A runner frozen inside a batch (SIGSTOP, a VM pause) must not hold its row locks
            # for ever: the server ends the session and rolls the batch back.
            cursor.execute(f"SET idle_in_transaction_session_timeout = {self.idle_milliseconds}")
        return Borrowed(raw)

    def still_current(self, dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        """Borrow again when Django has since closed or replaced its connection."""
        if dbapi_connection.wrapped is not connections[self.alias].connection:
            # The pool's documented way to say "reconnect": it calls borrow() again.
            raise DisconnectionError("Django replaced its connection")

    def connect(self) -> AbstractContextManager[Connection]:
        """A SQLAlchemy connection on Django's own."""
        return self.engine.connect()

    def transaction(self) -> AbstractContextManager[object]:
        """Django's atomic block on the alias, entered before the batch's first statement."""
        block: AbstractContextManager[object] = transaction.atomic(using=self.alias)
        return block

    def watch(self, on_statement: StatementHook) -> AbstractContextManager[object]:
        """Tell on_statement of each statement the ORM runs on the alias (a dry run counts
        the rows they change)."""

        def follow(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
            result = execute(sql, params, many, context)
            on_statement(None, context["cursor"], sql)
            return result

        wrapper: AbstractContextManager[object] = connections[self.alias].execute_wrapper(follow)
        return wrapper


def setup() -> None:
    """django.setup() once, for processes that did not start through manage.py."""
    if not apps.ready:
        django.setup()


def prepare(runtime: Runtime) -> None:
    """Point a runtime at the apps' task folders and run its batches on Django's connection."""
    setup()
    settings = runtime.settings.with_(
        tasks_dir=conf.project_folder(), more_tasks_dirs=conf.app_folders()
    )
    runtime.settings = settings
    runtime.catalog = Catalog(settings.tasks_dirs)
    runtime.batch_host = DjangoConnection(conf.database_alias(), settings.batch_idle_seconds)
