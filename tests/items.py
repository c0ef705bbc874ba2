"""The counter table the runner's tests check: each row must end with applied = 1."""

from __future__ import annotations

from sqlalchemy import Engine, text


def create_items(engine: Engine, rows: int) -> None:
    """(Re)create `items` with `rows` rows whose counter is 0."""
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS items"))
        connection.execute(
            text(
                "CREATE TABLE items (id INTEGER PRIMARY KEY, label TEXT NOT NULL, "
                "applied INTEGER NOT NULL DEFAULT 0)"
            )
        )
        if engine.dialect.name == "postgresql":
            connection.execute(
                text(
                    "INSERT INTO items (id, label) "
                    "SELECT g, 'item ' || g FROM generate_series(1, :n) g"
                ),
                {"n": rows},
            )
        elif engine.dialect.name in ("mysql", "mariadb") and rows > 0:
            # MariaDB's sequence tables: a recursive CTE stops at 1,000 rows by default there.
            connection.execute(
                text(
                    "INSERT INTO items (id, label) "
                    f"SELECT seq, concat('item ', seq) FROM seq_1_to_{int(rows)}"
                )
            )
        else:
            connection.execute(
                text(
                    "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < :n) "
                    "INSERT INTO items (id, label) SELECT i, 'item ' || i FROM g"
                ),
                {"n": rows},
            )


def applied_counts(engine: Engine) -> dict[int, int]:
    """How many rows were applied 0, 1, 2... times."""
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT applied, count(*) FROM items GROUP BY applied"))
        return {int(applied): int(count) for applied, count in rows}
