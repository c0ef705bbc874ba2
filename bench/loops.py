"""`python -m bench.loops KIND BATCH`: the baselines, each run as a process of its own.

KIND is `keyset` or `rows` (the hand-written loops), `procedure` (the same keyset loop in
PL/pgSQL, one CALL) or `update` (one UPDATE of the whole table). Every baseline runs as a script
would, so that it pays for starting Python, importing SQLAlchemy and connecting, as the runner
pays for its deploy hook. Prints the seconds spent after connecting.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence

from sqlalchemy import Connection, create_engine, select, text

from bench.data import USERS, WRITE_BACK, normalize

KEYSET = text("UPDATE users SET email_normalized = lower(email) WHERE id > :lo AND id <= :hi")
WHOLE_TABLE = text("UPDATE users SET email_normalized = lower(email)")
PROCEDURE = """
CREATE OR REPLACE PROCEDURE bench_backfill(batch bigint) LANGUAGE plpgsql AS $$
DECLARE
    lo bigint := 0;
    top bigint;
BEGIN
    SELECT max(id) INTO top FROM users;
    WHILE lo < top LOOP
        UPDATE users SET email_normalized = lower(email) WHERE id > lo AND id <= lo + batch;
        COMMIT;
        lo := lo + batch;
    END LOOP;
END $$
"""


def keyset_loop(connection: Connection, batch: int) -> None:
    """The loop a person writes with SQLAlchemy: one statement and one commit per batch."""
    top = int(connection.execute(text("SELECT max(id) FROM users")).scalar_one())
    connection.commit()
    for lo in range(0, top, batch):
        connection.execute(KEYSET, {"lo": lo, "hi": lo + batch})
        connection.commit()


def rows_loop(connection: Connection, batch: int) -> None:
    """Page by key, transform in Python, write back, commit."""
    query = select(USERS.c.id, USERS.c.email).order_by(USERS.c.id).limit(batch)
    last = 0
    while True:
        rows = connection.execute(query.where(USERS.c.id > last)).all()
        if not rows:
            connection.commit()
            break
        connection.execute(
            WRITE_BACK, [{"id": row.id, "value": normalize(row.email)} for row in rows]
        )
        connection.commit()
        last = rows[-1].id


def procedure(connection: Connection, batch: int) -> None:
    """The keyset loop inside PostgreSQL: no client round trip per batch, the limit."""
    connection.execute(text(PROCEDURE))
    connection.commit()
    # CALL commits inside the procedure, which PostgreSQL allows only outside a transaction.
    connection.execution_options(isolation_level="AUTOCOMMIT")
    connection.execute(text("CALL bench_backfill(:batch)"), {"batch": batch})


def update_all(connection: Connection, _batch: int) -> None:
    """One UPDATE of the whole table in one transaction: the fastest any batching can be."""
    connection.execute(WHOLE_TABLE)
    connection.commit()


KINDS: dict[str, Callable[[Connection, int], None]] = {
    "keyset": keyset_loop,
    "rows": rows_loop,
    "procedure": procedure,
    "update": update_all,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one baseline on DATABASE_URL and print its seconds after connecting."""
    kind, batch = (argv if argv is not None else sys.argv[1:])[:2]
    url = os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(url)
    with engine.connect() as connection:
        began = time.monotonic()
        KINDS[kind](connection, int(batch))
        seconds = time.monotonic() - began
    engine.dispose()
    print(f"{seconds:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
