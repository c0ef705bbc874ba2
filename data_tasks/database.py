"""Engines for the records database, tuned for PostgreSQL, MySQL/MariaDB and SQLite."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import URL, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from data_tasks.errors import DatabaseFailed, DataTaskError, ServiceUnavailable
from data_tasks.settings import redact

if TYPE_CHECKING:
    import psycopg

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


@dataclass(frozen=True)
class Timeouts:
    """How long one statement may wait for a row lock, and how long it may run at all.

    None leaves the server's own setting (usually: no limit).
    """

    lock_seconds: float | None = None
    statement_seconds: float | None = None


# The deploy hook, the sweep and the operator commands touch records only: a row held by a
# long batch, or a statement that does not come back, fails them within these bounds.
# Batches (workers, `run --inline`, `dry-run`) keep the server's own limits.
COMMAND_TIMEOUTS = Timeouts(lock_seconds=4.0, statement_seconds=6.0)


def batch_opening(dialect_name: str, synchronous_commit: str) -> str | None:
    """The statement a batch's transaction starts with: PostgreSQL's synchronous_commit for
    this transaction only (Settings.batch_synchronous_commit); None where there is nothing to set.
    """
    if dialect_name != "postgresql" or not synchronous_commit:
        return None
    # One of PostgreSQL's own words: Settings refuses any other value.
    return f"SET LOCAL synchronous_commit TO {synchronous_commit}"


def is_mysql(url: str) -> bool:
    """True for a MySQL or MariaDB URL (SQLAlchemy's dialects `mysql` and `mariadb`)."""
    return url.startswith(("mysql", "mariadb"))


def make_engine(
    url: str,
    connect_timeout: float | None = None,
    idle_in_transaction_seconds: float | None = None,
    timeouts: Timeouts | None = None,
    **kwargs: Any,
) -> Engine:
    """An engine with short connect timeouts, pre-ping, and each database set up for the runner.

    `timeouts` bounds every statement of every session (PostgreSQL, MySQL/MariaDB), or the
    wait for SQLite's write lock, so that a row held by a long batch is an error, not a hang.
    """
    url = normalize_url(url)
    try:
        return _make_engine(url, connect_timeout, idle_in_transaction_seconds, timeouts, **kwargs)
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
    timeouts: Timeouts | None,
    **kwargs: Any,
) -> Engine:
    timeouts = timeouts or Timeouts()
    connect_args: dict[str, Any] = {}
    if url.startswith("postgresql"):
        connect_args.update(_postgres_options(idle_in_transaction_seconds, timeouts))
    if url.startswith("sqlite"):
        # A writer waits for another instead of failing at once; the runner has one writer per task.
        busy_seconds = timeouts.lock_seconds or 30.0
        connect_args["timeout"] = busy_seconds
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        _use_immediate_transactions(engine, busy_seconds)
        return engine
    if connect_timeout is not None and (url.startswith("postgresql") or is_mysql(url)):
        connect_args["connect_timeout"] = _whole_seconds(connect_timeout)
    if is_mysql(url):
        return _make_mysql_engine(
            url, connect_args, idle_in_transaction_seconds, timeouts, **kwargs
        )
    return create_engine(url, connect_args=connect_args, pool_pre_ping=True, **kwargs)


def _make_mysql_engine(
    url: str,
    connect_args: dict[str, Any],
    idle_in_transaction_seconds: float | None,
    timeouts: Timeouts,
    **kwargs: Any,
) -> Engine:
    """A MySQL/MariaDB engine: READ COMMITTED, MariaDB's idle-transaction timeout, time limits.

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

    if timeouts.lock_seconds or timeouts.statement_seconds:
        _limit_mysql_sessions(engine, timeouts)
    return engine


def _postgres_options(
    idle_in_transaction_seconds: float | None, timeouts: Timeouts
) -> dict[str, str]:
    """libpq's `options` that set the session's time limits, if any."""
    options = []
    if idle_in_transaction_seconds:
        # A runner frozen inside a batch (SIGSTOP, a VM pause) must not hold its row locks
        # for ever: the server ends its session, rolls the batch back and frees the record.
        options.append(("idle_in_transaction_session_timeout", idle_in_transaction_seconds))
    if timeouts.lock_seconds:
        options.append(("lock_timeout", timeouts.lock_seconds))
    if timeouts.statement_seconds:
        options.append(("statement_timeout", timeouts.statement_seconds))
    if not options:
        return {}
    return {"options": " ".join(f"-c {name}={_milliseconds(s)}" for name, s in options)}


def _whole_seconds(seconds: float) -> int:
    # libpq and PyMySQL take whole seconds, and libpq reads 0 as no limit at all.
    return max(1, round(seconds))


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _limit_mysql_sessions(engine: Engine, timeouts: Timeouts) -> None:
    """Set the session's lock wait and statement time limits on every new MySQL connection."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        if timeouts.lock_seconds:
            # InnoDB counts whole seconds.
            seconds = max(1, math.ceil(timeouts.lock_seconds))
            cursor.execute(f"SET SESSION innodb_lock_wait_timeout = {seconds}")
        if timeouts.statement_seconds:
            cursor.execute("SELECT VERSION()")
            if "mariadb" in str(cursor.fetchone()[0]).lower():
                cursor.execute(f"SET SESSION max_statement_time = {timeouts.statement_seconds}")
            else:
                limit = _milliseconds(timeouts.statement_seconds)
                cursor.execute(f"SET SESSION max_execution_time = {limit}")
        cursor.close()


def _use_immediate_transactions(engine: Engine, busy_seconds: float) -> None:
    """Make SQLite take its write lock at BEGIN (SQLAlchemy's documented recipe), in WAL mode.

    pysqlite otherwise defers BEGIN until the first write, so a compare-and-set would read
    outside the transaction that commits it.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={_milliseconds(busy_seconds)}")
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
        raise unreachable(str(engine.url), error) from None


def psycopg_url(url: str) -> URL | None:
    """The parsed URL when connect_psycopg connects as make_engine's engine would; else None.

    Raises what make_url raises on a URL that does not parse.
    """
    parsed = make_url(normalize_url(url))
    # Hosts and ports in the query are rewritten by SQLAlchemy's dialect, which alone knows how.
    if parsed.drivername != "postgresql+psycopg" or {"host", "port"} & set(parsed.query):
        return None
    return parsed


def connect_psycopg(
    url: URL, connect_timeout: float, timeouts: Timeouts
) -> psycopg.Connection[tuple[Any, ...]]:
    """A psycopg connection in autocommit mode, made without SQLAlchemy's dialect.

    Its arguments are the ones the dialect passes for a psycopg_url, with make_engine's
    connect timeout and time limits; ServiceUnavailable when the database cannot be reached.
    """
    try:
        import psycopg
    except ModuleNotFoundError:
        raise MissingDriver(redact(str(url)), "psycopg") from None

    arguments: dict[str, Any] = url.translate_connect_args(username="user", database="dbname")
    arguments.update(url.query)
    arguments.update(_postgres_options(None, timeouts))
    arguments["connect_timeout"] = _whole_seconds(connect_timeout)
    try:
        return psycopg.connect(autocommit=True, **arguments)
    except psycopg.Error as error:
        raise unreachable(str(url), error) from None


def unreachable(url: str, error: BaseException) -> ServiceUnavailable:
    """The one-line error for a database that cannot be reached (or refused the connection)."""
    return ServiceUnavailable("database", redact(url), _first_line(error))


def database_failed(url: str, error: DBAPIError) -> DatabaseFailed:
    """The one-line error for a statement the database refused or cut short."""
    reason = _first_line(error)
    lowered = reason.lower()
    if "lock" in lowered and ("timeout" in lowered or "locked" in lowered):
        reason += " (a running batch may hold the record: try again)"
    return DatabaseFailed(redact(url), reason)


def database_error(url: str, error: DBAPIError) -> ServiceUnavailable:
    """One line for any driver error: unreachable, or reached and refused (database_failed)."""
    sqlstate = getattr(error.orig, "sqlstate", None)
    # Class 08 is PostgreSQL's "connection exception"; SQLite says "database is locked".
    answered = (sqlstate is not None and not str(sqlstate).startswith("08")) or (
        "locked" in str(error.orig).lower()
    )
    if answered or not isinstance(error, OperationalError | InterfaceError):
        return database_failed(url, error)
    return unreachable(url, error)


def _first_line(error: BaseException) -> str:
    """The first line of a driver's error, which is the part a person needs."""
    message = str(getattr(error, "orig", None) or error).strip()
    return message.splitlines()[0] if message else type(error).__name__
