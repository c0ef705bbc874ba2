"""Engines for the records database, tuned for PostgreSQL, MySQL/MariaDB and SQLite."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError

from data_tasks.errors import DataTaskError, ServiceUnavailable
from data_tasks.settings import redact

# The extra that installs each driver module SQLAlchemy may ask for; SQLite needs none.
DRIVER_EXTRAS = {"psycopg": "postgres", "psycopg2": "postgres", "pymysql": "mysql"}


class MissingDriver(DataTaskError):
    """DATABASE_URL names a database whose driver is not installed: one line says which extra."""

    def __init__(self, url: str, module: str) -> None:
        self.url = url
        self.module = module
        extra = DRIVER_EXTRAS.get(module)
        if extra:
            fix = f"pip install 'deferred-data-tasks[{extra}]'"
        elif module == "MySQLdb":
            fix = "use a mysql+pymysql:// URL and pip install 'deferred-data-tasks[mysql]'"
        else:
            fix = f"install the {module} package"
        super().__init__(f"the database driver {module} for {url} is not installed: {fix}")


# Plain URL schemes and the driver this package installs for each (the extras above).
_DRIVERS = {
    "postgres://": "postgresql+psycopg://",
    "postgresql://": "postgresql+psycopg://",
    "mysql://": "mysql+pymysql://",
    "mariadb://": "mariadb+pymysql://",
}


def normalize_url(url: str) -> str:
    """Pick the driver this package installs for plain postgres, mysql and mariadb URLs."""
    for prefix, scheme in _DRIVERS.items():
        if url.startswith(prefix):
            return scheme + url[len(prefix) :]
    return url


def is_mysql(url: str) -> bool:
    """True for a MySQL or MariaDB URL (SQLAlchemy's dialects `mysql` and `mariadb`)."""
    return url.startswith(("mysql", "mariadb"))


def make_engine(
    url: str,
    connect_timeout: float | None = None,
    idle_in_transaction_seconds: float | None = None,
    **kwargs: Any,
) -> Engine:
    """An engine with short connect timeouts, pre-ping, and each database set up for the runner."""
    url = normalize_url(url)
    try:
        return _make_engine(url, connect_timeout, idle_in_transaction_seconds, **kwargs)
    except ModuleNotFoundError as error:
        # SQLAlchemy imports the driver when it builds the engine, before any connection.
        raise MissingDriver(redact(url), (error.name or "?").split(".")[0]) from None


def require_driver(url: str) -> None:
    """Raise MissingDriver now when the URL's driver is not installed (a worker's start-up)."""
    make_engine(url).dispose()


def _make_engine(
    url: str,
    connect_timeout: float | None,
    idle_in_transaction_seconds: float | None,
    **kwargs: Any,
) -> Engine:
    connect_args: dict[str, Any] = {}
    if idle_in_transaction_seconds and url.startswith("postgresql"):
        # A runner frozen inside a batch (SIGSTOP, a VM pause) must not hold its row locks
        # for ever: the server ends its session, rolls the batch back and frees the record.
        milliseconds = max(1, round(idle_in_transaction_seconds * 1000))
        connect_args["options"] = f"-c idle_in_transaction_session_timeout={milliseconds}"
    if url.startswith("sqlite"):
        # A writer waits for another instead of failing at once; the runner has one writer per task.
        connect_args["timeout"] = 30
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        _use_immediate_transactions(engine)
        return engine
    if connect_timeout is not None and (url.startswith("postgresql") or is_mysql(url)):
        connect_args["connect_timeout"] = max(1, round(connect_timeout))
    if is_mysql(url):
        return _make_mysql_engine(url, connect_args, idle_in_transaction_seconds, **kwargs)
    return create_engine(url, connect_args=connect_args, pool_pre_ping=True, **kwargs)


def _make_mysql_engine(
    url: str,
    connect_args: dict[str, Any],
    idle_in_transaction_seconds: float | None,
    **kwargs: Any,
) -> Engine:
    """A MySQL/MariaDB engine: READ COMMITTED, and MariaDB's idle-transaction timeout.

    InnoDB defaults to REPEATABLE READ, where every plain SELECT of a transaction reads the
    snapshot of its first read: a runner or a claim would then decide on a row as it was, not
    as another process has since committed it. (Its UPDATEs read the latest committed row
    anyway, so the compare-and-set is safe either way; the SELECTs around it are not.)
    READ COMMITTED is what PostgreSQL does by default, and what the runner is written for.
    SQLAlchemy's mysql dialect connects with CLIENT.FOUND_ROWS, so an UPDATE's rowcount counts
    the rows it matched, not the ones it changed, as the compare-and-set needs.
    """
    kwargs.setdefault("isolation_level", "READ COMMITTED")
    engine = create_engine(url, connect_args=connect_args, pool_pre_ping=True, **kwargs)
    if idle_in_transaction_seconds:
        # A runner frozen inside a batch must not hold its row locks for ever: MariaDB (10.3+)
        # ends a session idle this long inside a transaction, rolling the batch back. MySQL
        # has no such setting (its wait_timeout counts idle sessions too), so it is set only
        # on MariaDB, which the server's version string names.
        seconds = max(1, math.ceil(idle_in_transaction_seconds))

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            if "mariadb" in dbapi_connection.get_server_info().lower():
                cursor = dbapi_connection.cursor()
                cursor.execute(f"SET SESSION idle_transaction_timeout = {seconds}")
                cursor.close()

    return engine


def _use_immediate_transactions(engine: Engine) -> None:
    """Make SQLite take its write lock at BEGIN (SQLAlchemy's documented recipe), in WAL mode.

    pysqlite otherwise defers BEGIN until the first write, so a compare-and-set would read
    outside the transaction that commits it.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def check_reachable(engine: Engine) -> None:
    """Raise ServiceUnavailable with one line when the database cannot be reached."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except DBAPIError as error:
        raise ServiceUnavailable("database", redact(str(engine.url)), _first_line(error)) from None


def _first_line(error: BaseException) -> str:
    """The first line of a driver's error, which is the part a person needs."""
    message = str(getattr(error, "orig", None) or error).strip()
    return message.splitlines()[0] if message else type(error).__name__
