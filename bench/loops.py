"""`python -m bench.loops keyset|rows BATCH`: the hand-written baselines, run as a script would be.

Run as a process of their own, so that the baseline pays for starting Python and importing
SQLAlchemy as the runner's deploy hook does. Prints the seconds spent in the loop itself.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence

from sqlalchemy import Engine, create_engine, select, text

from bench.data import USERS, WRITE_BACK, normalize

KEYSET = text("UPDATE users SET email_normalized = lower(email) WHERE id > :lo AND id <= :hi")


def keyset_loop(engine: Engine, batch: int) -> None:
    """The loop a person writes with SQLAlchemy: one statement and one commit per batch."""
    with engine.connect() as connection:
        top = int(connection.execute(text("SELECT max(id) FROM users")).scalar_one())
        for lo in range(0, top, batch):
            connection.execute(KEYSET, {"lo": lo, "hi": lo + batch})
            connection.commit()


def rows_loop(engine: Engine, batch: int) -> None:
    """Page by key, transform in Python, write back, commit."""
    query = select(USERS.c.id, USERS.c.email).order_by(USERS.c.id).limit(batch)
    last = 0
    with engine.connect() as connection:
        while True:
            rows = connection.execute(query.where(USERS.c.id > last)).all()
            if not rows:
                break
            connection.execute(
                WRITE_BACK, [{"id": row.id, "value": normalize(row.email)} for row in rows]
            )
            connection.commit()
            last = rows[-1].id


def main(argv: Sequence[str] | None = None) -> int:
    """Run one loop on DATABASE_URL and print its own seconds."""
    kind, batch = (argv if argv is not None else sys.argv[1:])[:2]
    url = os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(url)
    began = time.monotonic()
    (keyset_loop if kind == "keyset" else rows_loop)(engine, int(batch))
    print(f"{time.monotonic() - began:.6f}")
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
