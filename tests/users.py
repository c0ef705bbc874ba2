"""The tables of the sample-like chain: plans seeded once, users backfilled in two steps."""

from __future__ import annotations

from sqlalchemy import Engine, text


def create_users(engine: Engine, rows: int) -> None:
    """(Re)create `plans` (empty) and `users` with `rows` users whose emails need normalizing."""
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS plans"))
        connection.execute(text("DROP TABLE IF EXISTS users"))
        connection.execute(
            text(
                "CREATE TABLE plans (code TEXT PRIMARY KEY, name TEXT NOT NULL, "
                "monthly_cents INTEGER NOT NULL)"
            )
        )
        connection.execute(
            text(
                "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL, "
                "email_normalized TEXT, email_domain TEXT, "
                "backfill_runs INTEGER NOT NULL DEFAULT 0)"
            )
        )
        connection.execute(
            text("INSERT INTO users (id, email) VALUES (:id, :email)"),
            [{"id": i, "email": f"  User{i}@Example{i % 7}.COM "} for i in range(1, rows + 1)],
        )


def user_summary(engine: Engine) -> dict[str, object]:
    """What a user of the chain would check: plans, normalized emails, domains, runs per row."""
    with engine.connect() as connection:
        plans = sorted(connection.execute(text("SELECT code FROM plans")).scalars())
        missing_domain = connection.execute(
            text("SELECT count(*) FROM users WHERE email_domain IS NULL")
        ).scalar_one()
        wrong = connection.execute(
            text(
                "SELECT count(*) FROM users WHERE email_normalized <> lower(trim(email)) "
                "OR email_domain <> 'example' || (id % 7) || '.com'"
            )
        ).scalar_one()
        grouped = connection.execute(
            text("SELECT backfill_runs, count(*) FROM users GROUP BY backfill_runs")
        )
        runs = {int(times): int(count) for times, count in grouped}
    return {"plans": plans, "missing_domain": missing_domain, "wrong": wrong, "runs": runs}
