"""The benchmark's tables, the shared per-row transform, and task files written from templates."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, bindparam, column, table, text

from bench.services import Services, utc_now

USERS = table("users", column("id"), column("email"), column("email_normalized"))
# The row-iteration write-back, shared by the task file and the hand-written loop.
WRITE_BACK = text("UPDATE users SET email_normalized = :value WHERE id = :id").bindparams(
    bindparam("value"), bindparam("id")
)


def normalize(email: str) -> str:
    """The Python-side transform: trim, lower-case, drop a +tag from the local part."""
    local, _, domain = email.strip().lower().partition("@")
    return f"{local.split('+', 1)[0]}@{domain}"


def digest(email: str, rounds: int) -> str:
    """A CPU-bound transform, so that the scale-out benchmark measures work, not waiting."""
    return hashlib.pbkdf2_hmac("sha256", email.encode(), b"bench", rounds).hex()[:32]


def create_users(engine: Engine, rows: int) -> None:
    """(Re)create `users` with `rows` rows, vacuumed, analysed and checkpointed.

    Each timed run gets a fresh table, so that no method pays for another's dead tuples. The
    table is logged, as a production table is, so the WAL figures count what a user's would;
    the rows go in before the primary key is built, which is several times faster at 20,000,000.
    """
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS users"))
        connection.execute(
            text(
                "CREATE TABLE users "
                "(id bigint NOT NULL, email text NOT NULL, email_normalized text)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO users (id, email) SELECT g, ' User' || g || '+tag@Example.COM ' "
                "FROM generate_series(1, :n) g"
            ),
            {"n": rows},
        )
        connection.execute(text("SET LOCAL maintenance_work_mem = '256MB'"))
        connection.execute(text("ALTER TABLE users ADD PRIMARY KEY (id)"))
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    with autocommit.connect() as connection:
        connection.execute(text("VACUUM ANALYZE users"))
        # A checkpoint due in the middle of a timed run would land on one method only.
        connection.execute(text("CHECKPOINT"))


def require_filled(engine: Engine, what: str) -> None:
    """Raise when `what` left rows of `users` unfilled: a method that skipped work is not timed."""
    with engine.connect() as connection:
        unfilled = int(
            connection.execute(
                text("SELECT count(*) FROM users WHERE email_normalized IS NULL")
            ).scalar_one()
        )
    if unfilled:
        raise RuntimeError(f"{what} left {unfilled:,} rows unfilled")


def _options(**options: Any) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in options.items() if value is not None)


def keyset_source(
    batch_size: int | None, target_batch_seconds: float | None = None, parallel: int | None = None
) -> str:
    """A keyset backfill doing the hand-written loop's statement."""
    options = _options(
        batch_size=batch_size,
        target_batch_seconds=target_batch_seconds,
        parallel=parallel,
        depends_on=[],
    )
    return f'''"""Benchmark: fill users.email_normalized in keyset batches."""

from sqlalchemy import text
from sqlalchemy.orm import Session

from data_tasks import keyset_backfill

STATEMENT = text(
    "UPDATE users SET email_normalized = lower(email) WHERE id >= :first AND id <= :last"
)


@keyset_backfill("users", key="id", {options})
def bench_keyset(session: Session, first_id: int, last_id: int) -> None:
    session.execute(STATEMENT, {{"first": first_id, "last": last_id}})
'''


def rows_source(
    batch_size: int | None, rounds: int | None = None, parallel: int | None = None
) -> str:
    """A row iteration running the shared transform (or the CPU-bound digest) on each row."""
    options = _options(batch_size=batch_size, parallel=parallel, depends_on=[])
    transform = "normalize(row.email)" if rounds is None else f"digest(row.email, {rounds})"
    return f'''"""Benchmark: a Python-side transform of each row of users, written back."""

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bench.data import USERS, WRITE_BACK, digest, normalize
from data_tasks import row_iteration


@row_iteration(select(USERS.c.id, USERS.c.email), key="id", {options})
def bench_rows(session: Session, rows: Sequence[Any]) -> None:
    session.execute(WRITE_BACK, [{{"id": row.id, "value": {transform}}} for row in rows])
'''


ONE_SHOT_SOURCE = '''"""Benchmark: an empty one-shot data task."""

from sqlalchemy.orm import Session

from data_tasks import one_shot


@one_shot(depends_on=[])
def bench_one_shot(session: Session) -> None:
    pass
'''


@dataclass(frozen=True)
class Run:
    """One data task deployed and run to success."""

    version: str
    # From the deploy hook's start to the record's finished_at.
    seconds: float
    # From the record's started_at to its finished_at: the worker's share.
    worker_seconds: float


def run_data_task(services: Services, name: str, source: str, timeout: float, **env: str) -> Run:
    """Deploy one task file through the deploy hook and wait until a worker has run it."""
    version = services.next_version()
    services.write_task(version, name, source)
    began = utc_now()
    services.run_hook("--quiet", **env)
    started, finished = services.wait_succeeded([version], timeout)
    return Run(
        version,
        (finished - began).total_seconds(),
        (finished - started).total_seconds(),
    )
