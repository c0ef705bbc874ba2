"""`python -m bench.django_orm [--rows N]`: the example shop's email backfill written with the
Django ORM beside the same backfill written with the SQLAlchemy session, in rows per second.

Both run with `manage.py data_tasks run VERSION --inline` on the shop's own database (their
batches on Django's connection inside transaction.atomic); the SQLAlchemy one also runs with
`python -m deploy_hooks run --inline` on the records engine, the runner outside Django.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from bench.services import POSTGRES_URL, REDIS_URL, REPO
from data_tasks.database import make_engine, normalize_url

SHOP = REPO / "examples" / "django_shop"
TASKS = Path(__file__).resolve().parent / "django_tasks"
ORM = "20250901000000"
SQL = "20250101000000"
# `run --inline` ends with: succeeded VERSION NAME: N rows in K chunk(s), S.SSs
DONE = re.compile(r"succeeded \d+ \w+: (?P<rows>\d+) rows in \d+ chunk\(s\), (?P<s>[\d.]+)s")


def run(command: Sequence[str], env: dict[str, str]) -> float:
    """Run one inline backfill; its rows per second."""
    done = subprocess.run(command, cwd=SHOP, env=env, capture_output=True, text=True, check=False)
    found = DONE.search(done.stdout)
    if found is None:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    return int(found["rows"]) / float(found["s"])


def main(argv: Sequence[str] | None = None) -> int:
    """Make a database of N customers, run both backfills, print the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.django_orm", description=__doc__)
    parser.add_argument("--rows", type=int, default=50_000, help="customers (default 50,000)")
    parser.add_argument("--repetitions", type=int, default=5, help="runs of each (default 5)")
    args = parser.parse_args(argv)
    name = f"bench_django_{secrets.token_hex(3)}"
    admin = create_engine(normalize_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(normalize_url(POSTGRES_URL)).set(database=name)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.shop_settings",
        "PYTHONPATH": f"{REPO}{os.pathsep}{SHOP}",
        "SHOP_DB_NAME": name,
        "SHOP_BROKER_URL": REDIS_URL,
        "TEST_DATA_TASKS": json.dumps({"DIR": str(TASKS), "CHUNK_SECONDS": 3600}),
    }
    engine = make_engine(url.render_as_string(hide_password=False))
    try:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"], cwd=SHOP, env=env, check=True
        )
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO accounts_customer (email, note) SELECT "
                    "' Customer' || g || '@Example.com ', '' FROM generate_series(1, :n) AS g"
                ),
                {"n": args.rows},
            )
        manage = [sys.executable, "manage.py", "data_tasks", "run", "--inline"]
        plain = {
            **env,
            "DATABASE_URL": url.render_as_string(hide_password=False),
            "REDIS_URL": REDIS_URL,
            "DATA_TASKS_DIR": str(TASKS),
            "DATA_TASKS_CHUNK_SECONDS": "3600",
        }
        runs: dict[str, list[float]] = {"orm": [], "sql": [], "plain": []}
        rerun = [sys.executable, "manage.py", "data_tasks", "rerun", "--yes"]
        for repetition in range(args.repetitions):
            if repetition:
                subprocess.run([*rerun, SQL], cwd=SHOP, env=env, check=True, capture_output=True)
            runs["sql"].append(run([*manage, SQL], env))
            reset(engine)
            if repetition:
                subprocess.run([*rerun, ORM], cwd=SHOP, env=env, check=True, capture_output=True)
            runs["orm"].append(run([*manage, ORM], env))
            reset(engine)
            subprocess.run([*rerun, SQL], cwd=SHOP, env=env, check=True, capture_output=True)
            inline = [sys.executable, "-m", "deploy_hooks", "run", "--inline", SQL]
            runs["plain"].append(run(inline, plain))
            reset(engine)
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()
    orm, sql, plain_sql = (statistics.median(runs[k]) for k in ("orm", "sql", "plain"))
    print(
        f"{args.rows:,} customers, batches of 1,000, one inline chunk each; rows per second, "
        f"median of {args.repetitions}:"
    )
    print(f"  Django ORM  (manage.py data_tasks run --inline):   {orm:10,.0f}")
    print(f"  SQLAlchemy  (manage.py data_tasks run --inline):   {sql:10,.0f}")
    print(f"  SQLAlchemy  (python -m deploy_hooks run --inline): {plain_sql:10,.0f}")
    print(f"  ORM / SQLAlchemy in the same project: {orm / sql:.2f}")
    return 0


def reset(engine: Engine) -> None:
    """Every customer back to no normalized email."""
    with engine.begin() as connection:
        connection.execute(text("UPDATE accounts_customer SET email_normalized = NULL"))


if __name__ == "__main__":
    sys.exit(main())
